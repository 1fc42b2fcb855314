"""Load a hooked model (TransformerLens 4 `TransformerBridge`) and the tokenizer helpers every method needs.

`load_model()` with no name loads the embedded model organism; a local directory in Hugging Face format
loads offline; a hub name loads only when it is already in the local Hugging Face cache.
The bridge shares its weight tensors with the wrapped HF model (`HookedModel.hf`), so an in-place edit
of e.g. `down_proj.weight` is seen by both at once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from kelocate.errors import KelocateError, SubjectNotFoundError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float64": torch.float64}


@dataclass(frozen=True)
class Encoded:
    """Token ids (1-D) of a text with each token's character span in that text (BOS gets (0, 0))."""

    ids: torch.Tensor
    offsets: list[tuple[int, int]]
    text: str

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise KelocateError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(DTYPES))}")
    return DTYPES[dtype]


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Make every Hugging Face lookup local-only while a model loads (nothing is downloaded at run time)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _resolve_source(name_or_path: str | os.PathLike | None) -> tuple[str, str]:
    """Return (what to load, display name); raise a one-line error when it cannot be loaded offline."""
    if name_or_path is None:
        from kelocate.organism import checkpoint_dir

        path = checkpoint_dir()
        if not (path / "config.json").is_file():
            raise KelocateError(
                f"the embedded model organism is missing at {path}; run `kelocate organism build` to create it")
        return str(path), "organism"
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise KelocateError(
                f"{text!r} is not a Hugging Face model directory (no config.json); pass a folder written by "
                "save_pretrained")
        return str(path), text
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep in text.lstrip("/")
    if not looks_like_path:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(text, "config.json")
        if isinstance(cached, str):
            return text, text
    raise KelocateError(
        f"model {text!r} is neither a local directory nor in the local Hugging Face cache; pass a local "
        "path (--model DIR) or download it first where a network is available")


class HookedModel:
    """A TransformerBridge with its tokenizer and the helpers that locating and editing methods use."""

    def __init__(self, bridge, tokenizer, name: str = "model", path: Path | None = None) -> None:
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.name = name
        self.path = path  # local directory the weights came from (None for a hub-cache name)
        self.bridge.eval()

    @property
    def world_file(self) -> Path | None:
        """The synthetic world (`world.json`) beside an organism checkpoint, if this model has one."""
        if self.path is not None and (self.path / "world.json").is_file():
            return self.path / "world.json"
        return None

    # ------------------------------------------------------------------ facts about the model
    @property
    def hf(self):
        """The wrapped Hugging Face model (shares its weights with the bridge)."""
        return self.bridge.original_model

    @property
    def n_layers(self) -> int:
        return int(self.hf.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.hf.config.hidden_size)

    @property
    def d_mlp(self) -> int:
        return int(self.hf.config.intermediate_size)

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    @property
    def bos_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    def check_layer(self, layer: int) -> int:
        """Return `layer` when the model has it; a negative layer counts from the end."""
        n = self.n_layers
        if not -n <= layer < n:
            raise KelocateError(f"layer {layer} does not exist: the model has layers 0..{n - 1}")
        return layer % n

    # ------------------------------------------------------------------ tokenization
    def encode(self, text: str, prepend_bos: bool = True) -> Encoded:
        """Tokenize `text` (without special tokens) and prepend BOS when asked and the tokenizer has one."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        if prepend_bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
            offsets = [(0, 0)] + offsets
        return Encoded(torch.tensor(ids, dtype=torch.long), offsets, text)

    def tokens(self, text: str, prepend_bos: bool = True) -> list[str]:
        """Readable token strings of `text` (SentencePiece's '▁' shown as a space)."""
        ids = self.encode(text, prepend_bos).ids.tolist()
        return [self.tokenizer.convert_ids_to_tokens(i).replace("\u2581", " ") for i in ids]

    def subject_span(self, prompt: str, subject: str, prepend_bos: bool = True) -> tuple[int, int]:
        """Token range [start, end) covering the last occurrence of `subject` in `prompt`.

        Found from character offsets: every token overlapping the subject's characters is in the span.
        A leading-space piece ('▁Japan') whose offsets include the space still counts.
        """
        if not subject or not subject.strip():
            raise SubjectNotFoundError("the subject is empty; pass the subject's text (e.g. --subject SMAP)")
        char_start = prompt.rfind(subject)
        if char_start < 0:
            raise SubjectNotFoundError(
                f"subject {subject!r} does not occur in the prompt {prompt!r}; pass a subject that is part of "
                "the prompt (--subject)")
        # ignore surrounding whitespace of the subject itself
        lead = len(subject) - len(subject.lstrip())
        char_start += lead
        char_end = char_start + len(subject.strip())
        enc = self.encode(prompt, prepend_bos)
        hits = [i for i, (a, b) in enumerate(enc.offsets) if b > a and a < char_end and b > char_start]
        if not hits:
            raise SubjectNotFoundError(f"subject {subject!r} covers no token of the prompt {prompt!r}")
        return hits[0], hits[-1] + 1

    def answer_ids(self, prompt: str, answer: str) -> list[int]:
        """Token ids of `answer` as it continues `prompt` (a separating space is added when none is there)."""
        if not answer or not answer.strip():
            raise KelocateError("the answer is empty; pass the answer's text (e.g. --answer Japan)")
        sep = "" if prompt.endswith(" ") or answer.startswith(" ") else " "
        full = prompt + sep + answer
        enc = self.encode(full, prepend_bos=False)
        cut = len(prompt)
        ids = [int(t) for t, (a, b) in zip(enc.ids.tolist(), enc.offsets, strict=True) if b > cut]
        prompt_ids = self.encode(prompt, prepend_bos=False).ids.tolist()
        if enc.ids.tolist()[: len(prompt_ids)] != prompt_ids or not ids:
            ids = self.encode(sep + answer, prepend_bos=False).ids.tolist()
        return ids

    def batch_ids(self, prompts: list[str], prepend_bos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-aligned, right-padded ids and attention mask for several prompts."""
        encs = [self.encode(p, prepend_bos).ids for p in prompts]
        width = max(len(e) for e in encs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(encs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(encs), width), dtype=torch.long)
        for i, e in enumerate(encs):
            ids[i, : len(e)] = e
            mask[i, : len(e)] = 1
        return ids.to(self.device), mask.to(self.device)

    # ------------------------------------------------------------------ forward helpers
    @torch.no_grad()
    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, pos, vocab] of the bridge for ids [batch, pos] (or [pos])."""
        if ids.dim() == 1:
            ids = ids[None]
        kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
        return self.bridge(ids.to(self.device), **kwargs)

    def next_token_probs(self, prompt: str) -> torch.Tensor:
        """Probability distribution over the vocabulary for the token after `prompt`."""
        logits = self.logits(self.encode(prompt).ids)[0, -1]
        return torch.softmax(logits.float(), dim=-1)

    def top_k(self, prompt: str, k: int = 5) -> list[tuple[str, float]]:
        """The k most likely next tokens after `prompt` as (decoded token, probability)."""
        if k < 1:
            raise KelocateError(f"top-k must be at least 1, got {k}")
        probs = self.next_token_probs(prompt)
        vals, idx = probs.topk(min(k, probs.shape[0]))
        return [(self.decode([int(i)]), float(v)) for v, i in zip(vals, idx, strict=True)]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    @torch.no_grad()
    def answer_logprob(self, prompt: str, answer: str) -> float:
        """log p(answer | prompt): the sum of the log-probabilities of the answer's tokens (teacher-forced)."""
        prompt_ids = self.encode(prompt).ids
        target = torch.tensor(self.answer_ids(prompt, answer), dtype=torch.long)
        full = torch.cat([prompt_ids, target])
        logp = torch.log_softmax(self.logits(full)[0].float(), dim=-1)
        n = len(prompt_ids)
        rows = logp[n - 1 : n - 1 + len(target)]
        return float(rows.gather(1, target.to(rows.device)[:, None]).sum())

    def answer_prob(self, prompt: str, answer: str) -> float:
        """p(answer | prompt), the product of its tokens' probabilities."""
        return float(torch.exp(torch.tensor(self.answer_logprob(prompt, answer))))

    @torch.no_grad()
    def generate(self, prompt: str, max_new_tokens: int = 20, stop_at_eos: bool = True) -> str:
        """Greedy continuation of `prompt` (the new text only)."""
        ids = self.encode(prompt).ids.to(self.device)[None]
        out = self.hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                               do_sample=False, eos_token_id=self.tokenizer.eos_token_id if stop_at_eos else None,
                               pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)

    # ------------------------------------------------------------------ hook names
    @staticmethod
    def hook_name(kind: str, layer: int | None = None) -> str:
        """TransformerLens hook name for a site: embed, resid_pre, hidden (= resid_post), attn, mlp, mlp_post."""
        names = {"resid_pre": "hook_resid_pre", "hidden": "hook_resid_post", "resid_post": "hook_resid_post",
                 "attn": "hook_attn_out", "mlp": "hook_mlp_out", "mlp_post": "mlp.hook_post"}
        if kind == "embed":
            return "hook_embed"
        if kind not in names:
            raise KelocateError(f"unknown hook site {kind!r}; use one of embed, {', '.join(names)}")
        if layer is None:
            raise KelocateError(f"hook site {kind!r} needs a layer")
        return f"blocks.{layer}.{names[kind]}"


def load_model(name_or_path: str | os.PathLike | None = None, device: str | None = None,
               dtype: str | torch.dtype | None = None) -> HookedModel:
    """Load a hooked model: None = the embedded organism, a local HF directory, or a name in the local cache."""
    source, display = _resolve_source(name_or_path)
    torch_dtype = _resolve_dtype(dtype)
    device = device or "cpu"
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from transformer_lens.model_bridge import TransformerBridge

    try:
        with _hub_offline():
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            hf_model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True, dtype=torch_dtype)
            hf_model.to(device).eval()
            bridge = TransformerBridge.boot_transformers(source, hf_model=hf_model, tokenizer=tokenizer,
                                                         device=device, dtype=torch_dtype)
    except KelocateError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KelocateError(f"could not load model {display!r}: {first}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    local = Path(source) if Path(source).is_dir() else None
    return HookedModel(bridge, tokenizer, display, local)
