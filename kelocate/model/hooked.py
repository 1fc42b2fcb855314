"""`HookedModel`: a TransformerLens 4 `TransformerBridge` with its tokenizer and the helpers methods share.

The bridge shares its weight tensors with the wrapped HF model (`HookedModel.hf`), so an in-place edit of
e.g. `down_proj.weight` is seen by both at once. The helpers here are thin: tokenization lives in
`tokens.py`, scoring in `scoring.py`, hook names in `sites.py`, weights in `weights.py`.

What the model is (family, entity names, own training text) is its `provenance` (`provenance.py`), given to
the constructor by the loader and read-only afterwards: `entity_names` and `own_corpus` are views of it, and
`source` (how the files were found) is a read-only mapping.

What editors that change no weight serve on top of the weights is the `serving` stack (`serving.py`): the
model puts its texts in front of every prompt (`context`) and lets its top forward override answer in
`logits` (and so in every score and in `generate`); it names no editor.

Nothing outside `model/` writes onto a model: after `__init__` setting (or deleting) a public attribute is an
AttributeError (tests/test_rooms.py checks the code for `model.x = ...` as well).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from kelocate.errors import KelocateError
from kelocate.model import sampling, scoring, sites, tokens
from kelocate.model.provenance import Corpus, Provenance
from kelocate.model.serving import ServingStack
from kelocate.model.tokens import Encoded
from kelocate.model.twin import trusted_twin
from kelocate.timing import timed

_SEALED = ("a model's {name!r} cannot be set after loading: what the model is (its provenance) is set at load, "
           "and what an editor serves on top of it goes through `model.serving`")


class HookedModel:
    """A TransformerBridge with its tokenizer, where it came from, and the helpers methods use."""

    def __init__(self, bridge, tokenizer, name: str = "model", path: Path | None = None,
                 source: dict[str, Any] | None = None, provenance: Provenance | None = None) -> None:
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.name = name
        self.path = path  # local directory (or GGUF file) the weights came from
        # how it was loaded (kind, revision, file, ...), read-only: what the model is belongs to `provenance`
        self.source: Mapping[str, Any] = MappingProxyType(dict(source or {}))
        # what the model is (family, entity names, own corpus): set here by the loader, read-only afterwards
        self._provenance = provenance or Provenance()
        # what editors that change no weight serve on top of it (in-context text, a served forward): `serving.py`.
        # Encoding, subject spans and answer ids all see its text (`context`); `logits` its forward override
        self.serving = ServingStack()
        self._plain_text = False  # inside `without_context`: texts are read as they are
        self.bridge.eval()
        from kelocate.model.weights import fingerprint_of

        self.fingerprint = fingerprint_of(self)  # identity of the weights as loaded (edits do not change it)
        self._sealed = True  # from here on no public attribute is set (`__setattr__`)

    def __setattr__(self, name: str, value: Any) -> None:
        """Public attributes are set in `__init__` only; model/ code keeps its own later state in private ones
        (`_plain_text`, the block runner's `_stack_verdict`). Nothing else writes onto a model."""
        if not name.startswith("_") and self.__dict__.get("_sealed", False):
            raise AttributeError(_SEALED.format(name=name))
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if not name.startswith("_"):
            raise AttributeError(_SEALED.format(name=name))
        object.__delattr__(self, name)

    # ------------------------------------------------------------------ facts about the model
    @property
    def provenance(self) -> Provenance:
        """What the model is (family, entity names, own corpus), fixed at load (see `provenance.py`)."""
        return self._provenance

    @property
    def entity_names(self) -> tuple[str, ...]:
        """Known entity names (the organism's world; empty for other models): subject inference and the noise
        scale of causal tracing prefer them."""
        return self._provenance.entity_names

    @property
    def own_corpus(self) -> Corpus | None:
        """() -> (texts, description) of the text the model was trained on, when known (the organism's);
        editors' key statistics use it by default."""
        return self._provenance.corpus

    @property
    def hf(self):
        """The wrapped Hugging Face model (shares its weights with the bridge)."""
        return self.bridge.original_model

    @property
    def config(self):
        return self.hf.config

    @property
    def model_type(self) -> str:
        return str(getattr(self.config, "model_type", ""))

    @property
    def n_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)

    @property
    def d_mlp(self) -> int:
        return int(self.config.intermediate_size)

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    @property
    def pad_id(self) -> int:
        return tokens.pad_id(self.tokenizer)

    @property
    def encoding(self) -> str:
        """How prompts are encoded, for results: the tokenizer's default and what it puts in front."""
        front = tokens.prefix_tokens(self.tokenizer)
        return f"tokenizer default ({'prefix ' + ' '.join(front) if front else 'no prefix token'})"

    def check_layer(self, layer: int) -> int:
        """Return `layer` when the model has it; a negative layer counts from the end."""
        n = self.n_layers
        if not -n <= layer < n:
            raise KelocateError(f"layer {layer} does not exist: the model has layers 0..{n - 1}")
        return layer % n

    # ------------------------------------------------------------------ tokenization
    def encode(self, text: str, special: bool = True) -> Encoded:
        """Token ids of `text` as the tokenizer encodes it by default (`special=False`: no BOS or others)."""
        return tokens.encode(self.tokenizer, self.in_context(text), special)

    @property
    def context(self) -> str:
        """The text put in front of every prompt this model encodes: the serving stack's texts, in order ("" =
        none; also "" inside `without_context`)."""
        return "" if self._plain_text else self.serving.context

    @contextlib.contextmanager
    def without_context(self) -> Iterator[None]:
        """Inside the block the model reads texts as they are (no in-context text); restored afterwards."""
        saved, self._plain_text = self._plain_text, True
        try:
            yield
        finally:
            self._plain_text = saved

    def in_context(self, text: str) -> str:
        """`text` as the model reads it: after the in-context text, when one is set (`context`)."""
        context = self.context
        return context + text if context else text

    def tokens(self, text: str) -> list[str]:
        """Readable labels of `text`'s tokens ('␣Tower', never 'ĠTower' or '▁Tower')."""
        return tokens.token_labels(self.tokenizer, self.encode(text).ids)

    def labels(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """Readable labels of token ids."""
        return tokens.token_labels(self.tokenizer, ids)

    def subject_span(self, prompt: str, subject: str) -> tuple[int, int]:
        """Token range [start, end) of the last occurrence of `subject` in `prompt` (see `tokens.subject_span`)."""
        return tokens.subject_span(self.tokenizer, self.in_context(prompt), subject)

    def answer_ids(self, prompt: str, answer: str) -> list[int]:
        """Token ids of `answer` as it continues `prompt`."""
        return tokens.answer_ids(self.tokenizer, self.in_context(prompt), answer)

    def batch_ids(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids and attention mask of several prompts, on the model's device."""
        ids, mask = tokens.pad_batch([self.encode(p).ids for p in prompts], self.pad_id)
        return ids.to(self.device), mask.to(self.device)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    # ------------------------------------------------------------------ forward helpers
    @torch.no_grad()
    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, pos, vocab] of the bridge (hooks a user attached apply) for ids [batch, pos] or [pos].

        With no hook attached the plain HF twin runs instead (`twin.trusted_twin`: the same tensors and maths,
        without the bridge's cost)."""
        if ids.dim() == 1:
            ids = ids[None]
        served = self.serving.forward  # a served forward that answers in place of the bridge, if any
        if served is not None:
            mask = torch.ones_like(ids) if attention_mask is None else attention_mask
            return served(ids.to(self.device), mask.to(self.device))
        kwargs = {} if attention_mask is None else {"attention_mask": attention_mask.to(self.device)}
        twin = trusted_twin(self)
        if twin is not None:
            return twin(ids.to(self.device), use_cache=False, **kwargs).logits
        return self.bridge(ids.to(self.device), **kwargs)

    def next_token_probs(self, prompt: str) -> torch.Tensor:
        """Probability distribution over the vocabulary for the token after `prompt`."""
        return torch.softmax(self.logits(self.encode(prompt).ids)[0, -1].float(), dim=-1)

    def top_k(self, prompt: str, k: int = 5) -> list[tuple[str, float]]:
        """The k most likely next tokens after `prompt` as (decoded token, probability)."""
        if k < 1:
            raise KelocateError(f"top-k must be at least 1, got {k}")
        probs = self.next_token_probs(prompt)
        vals, idx = probs.topk(min(k, probs.shape[0]))
        return [(self.decode([int(i)]), float(v)) for v, i in zip(vals, idx, strict=True)]

    def answer_logprob(self, prompt: str, answer: str) -> float:
        """log p(answer | prompt): the sum of the log-probabilities of the answer's tokens (teacher-forced)."""
        return scoring.score_targets(self, [prompt], [answer])[0].logprob

    def answer_prob(self, prompt: str, answer: str) -> float:
        """p(answer | prompt), the product of its tokens' probabilities."""
        return scoring.score_targets(self, [prompt], [answer])[0].prob

    @torch.no_grad()
    @timed("generation")
    def generate(self, prompt: str, max_new_tokens: int = 20, stop_at_eos: bool = True) -> str:
        """Greedy continuation of `prompt` (the new text only): the argmax loop of `sampling.sample`.

        It decodes with a key/value cache where that is exact (`sampling.default_step`: on the block runner's
        weights, else HF's cache on the plain twin, or a served editor's own cached step); otherwise (hooks
        attached) every step is a whole forward of `logits`. HF's own cached decoding is not used through the
        bridge: once TransformerLens 4.3's bridge wraps the HF modules it no longer matches a full forward
        (logits off by 0.35 on a 3-layer Llama).
        Tests check the cached tokens equal the uncached argmax loop's.
        """
        ids = self.encode(prompt).ids.to(self.device)[None]
        eos = self.tokenizer.eos_token_id if stop_at_eos else None
        out = sampling.sample(self, ids, max_new_tokens, greedy=True, stop_at=eos)
        return self.tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)

    @staticmethod
    def hook_name(kind: str, layer: int | None = None) -> str:
        """TransformerLens hook name of a site (see `sites.site`)."""
        return sites.site(kind, layer)
