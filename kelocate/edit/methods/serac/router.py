"""SERAC's served model: the scope classifier, the counterfactual model, the memory of edits and the router
that answers through them.

- the scope classifier is an embedding classifier (SERAC's dual-encoder variant): the base model's hidden
  states at `scope_layers` (read with the model's reader), unit-normalised per token and averaged over the
  text so far, go through a learned projection; an (edit, input) pair is in scope when
  sigmoid(scale * cos + bias) > threshold. The edit is embedded from its fact sentence
  ('<prompt> <target_new>').
- the counterfactual model is a copy of the base model whose `cf_layers` have their own weights (the other
  weights stay shared with the base); it reads '<fact><separator><input>'.
- the `Router` is a language model in its own right: each next-token prediction routes the text up to that
  position (prefix averages are causal, so the whole sequence is routed in one base forward), and each
  in-scope position takes the counterfactual model's logits for its retrieved edit. With an empty memory it
  returns the base forward itself. The SERAC editor serves a router by pushing it onto the model's serving
  stack as the forward that stands in for the bridge's (`kelocate.model.serving`).
- generating through a router (`Router.decoding_step`, which `sampling.sample` takes) routes only the new
  position at each step: the base model decodes with a key/value cache on the plain twin, the prefix means
  are running sums, and each (row, edit) pair's counterfactual model keeps its own cache. The same logits as
  the whole-sequence router at every step, to float tolerance (tested).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from kelocate.edit.losses import id_batch
from kelocate.edit.methods.serac.config import CHECKPOINT, CONFIG, SERACConfig
from kelocate.edit.request import EditRequest, fact_text
from kelocate.errors import KelocateError
from kelocate.model import tokens
from kelocate.model.sampling import cached_step
from kelocate.model.sites import read, site
from kelocate.model.twin import cache_kwargs, plain_twin, returned_cache, trusted_twin


# ---------------------------------------------------------------------- the scope classifier
def front_length(model) -> int:
    """How many special tokens the default encoding puts before a text (BOS), never part of the input."""
    return len(tokens.prefix_tokens(model.tokenizer))


def prefix_means(states: Sequence[torch.Tensor], mask: torch.Tensor, front: int) -> torch.Tensor:
    """[batch, pos, layers * d]: per layer, the mean over positions front..t of the unit-normalised hidden
    state, at every position t (zeros before any real token). Causal: position t sees tokens <= t only."""
    keep = mask.clone().float()
    keep[:, :front] = 0
    out = []
    for h in states:
        unit = torch.nn.functional.normalize(h.float(), dim=-1) * keep[..., None]
        out.append(unit.cumsum(1) / keep.cumsum(1).clamp(min=1)[..., None])
    return torch.cat(out, dim=-1)


def forward_with_states(model, ids: torch.Tensor, mask: torch.Tensor,
                        layers: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The bridge's logits and the hidden states (residual stream after each of `layers`), one forward (the
    model's reader)."""
    with torch.no_grad():
        logits, states = read(model, ids, mask, [site("hidden", layer) for layer in layers])
    return logits, [states[site("hidden", layer)] for layer in layers]


def text_features(model, texts: Sequence[str], layers: Sequence[int]) -> list[torch.Tensor]:
    """Per text: its prefix-mean features at every position [pos, F] (encoded without in-context text)."""
    out = []
    with model.without_context():
        for lo in range(0, len(texts), 64):
            ids, mask = model.batch_ids(list(texts[lo:lo + 64]))
            _, states = forward_with_states(model, ids, mask, layers)
            feats = prefix_means(states, mask, front_length(model))
            out += [feats[i, : int(mask[i].sum())] for i in range(len(ids))]
    return out


class ScopeClassifier(nn.Module):
    """sigmoid(scale * cos(P x, P e) + bias): is input x (features) about edit e (features)?"""

    def __init__(self, n_features: int, dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(n_features, dim, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-3.0))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.project(features), dim=-1)

    def logits(self, queries: torch.Tensor, edits: torch.Tensor) -> torch.Tensor:
        """Scope logits [..., n_edits] of embedded queries [..., dim] against embedded edits [n_edits, dim]."""
        return self.log_scale.exp() * queries @ edits.T + self.bias


# ---------------------------------------------------------------------- the counterfactual model
def layer_parameter_names(twin, layers: Sequence[int]) -> list[str]:
    """Names of every parameter of the chosen decoder layers of a plain HF Llama."""
    prefixes = tuple(f"model.layers.{layer}." for layer in layers)
    return [name for name, _ in twin.named_parameters() if name.startswith(prefixes)]


def counterfactual_model(model, layers: Sequence[int], trained: dict[str, torch.Tensor] | None = None):
    """A plain copy of the base model in which `layers` have their own (trainable) weights, initialised from
    `trained` or from the base; every other weight is the base's own tensor (shared, not copied)."""
    twin = plain_twin(model)
    for name in layer_parameter_names(twin, layers):
        owner, leaf = twin.get_submodule(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1]
        value = trained[name] if trained is not None else getattr(owner, leaf).detach()
        # loaded for serving: no gradients; built for training: `train` turns them on
        setattr(owner, leaf, nn.Parameter(value.to(model.device, model.dtype).clone(), requires_grad=False))
    return twin


def fact_prefix(model, request: EditRequest, separator: str) -> list[int]:
    """Token ids the counterfactual model reads before an input: the edit's fact sentence (with BOS)."""
    return tokens.encode(model.tokenizer, fact_text(request) + separator).ids.tolist()


def input_ids(model, text: str) -> list[int]:
    """An input's token ids without the front special tokens (they come with the fact prefix)."""
    return tokens.encode(model.tokenizer, text).ids.tolist()[front_length(model):]


# ---------------------------------------------------------------------- serving
class Router:
    """The served SERAC model: routes every position to the base model or to the counterfactual model."""

    def __init__(self, model, scope: ScopeClassifier, counterfactual, config: SERACConfig, checkpoint: str,
                 threshold: float | None = None) -> None:
        self.model, self.scope, self.counterfactual, self.config = model, scope.eval(), counterfactual.eval(), config
        self.checkpoint = checkpoint
        self.threshold = config.threshold if threshold is None else float(threshold)
        self.front = front_length(model)
        self.memory: list[EditRequest] = []
        self._vectors = torch.zeros(0, config.scope_dim, device=model.device)
        self._prefixes: list[list[int]] = []

    def with_memory(self, requests: Sequence[EditRequest], threshold: float | None = None) -> Router:
        """A router that shares this one's trained models (and checkpoint) and serves `requests` (embedded
        now), at `threshold` (default: this one's); this one is unchanged."""
        other = Router(self.model, self.scope, self.counterfactual, self.config, self.checkpoint,
                       self.threshold if threshold is None else threshold)
        other.set_memory(requests)
        return other

    def set_memory(self, requests: Sequence[EditRequest]) -> None:
        """Replace the memory (edits embedded once, here; nothing changes if embedding fails)."""
        requests = list(requests)
        prefixes = [fact_prefix(self.model, r, self.config.separator) for r in requests]
        vectors = torch.zeros(0, self.config.scope_dim, device=self.model.device)
        if requests:
            feats = text_features(self.model, [fact_text(r) for r in requests], self.config.scope_layers)
            with torch.no_grad():
                vectors = self.scope.embed(torch.stack([f[-1] for f in feats]))
        self.memory, self._prefixes, self._vectors = requests, prefixes, vectors

    @torch.no_grad()
    def scope_logits(self, states: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """[batch, pos, n_edits] scope logits of every position's text so far against every stored edit."""
        return self.scope.logits(self.scope.embed(prefix_means(states, mask, self.front)), self._vectors)

    @torch.no_grad()
    def route(self, texts: Sequence[str]) -> list[tuple[int | None, float]]:
        """For each text as a whole: (index of the edit it is routed to or None, its best scope probability)."""
        if not self.memory:
            return [(None, 0.0)] * len(texts)
        ids, mask = self.model.batch_ids(list(texts))
        _, states = forward_with_states(self.model, ids, mask, self.config.scope_layers)
        last = mask.sum(1) - 1
        out = []
        logits = self.scope_logits(states, mask)
        for i in range(len(texts)):
            best, which = logits[i, int(last[i])].max(-1)
            p = float(torch.sigmoid(best))
            out.append((int(which) if p > self.threshold else None, p))
        return out

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.memory:
            return self.model.bridge(ids, attention_mask=mask)
        base, states = forward_with_states(self.model, ids, mask, self.config.scope_layers)
        best, which = self.scope_logits(states, mask).max(-1)
        in_scope = (torch.sigmoid(best) > self.threshold) & mask.bool()
        in_scope[:, : self.front] = False
        pairs = sorted({(int(b), int(which[b, t])) for b, t in in_scope.nonzero().tolist()})
        if not pairs:
            return base
        out = base.clone()
        lengths = mask.sum(1).tolist()
        for lo in range(0, len(pairs), 32):
            chunk = pairs[lo:lo + 32]
            rows = [(self._prefixes[e] + ids[b, self.front:int(lengths[b])].tolist(), []) for b, e in chunk]
            batch = id_batch(rows, self.model.pad_id, self.model.device)
            cf = self.counterfactual(input_ids=batch["ids"], attention_mask=batch["mask"]).logits
            for row, (b, e) in enumerate(chunk):
                positions = (in_scope[b] & (which[b] == e)).nonzero()[:, 0]
                shift = len(self._prefixes[e]) - self.front
                out[b, positions] = cf[row, positions + shift].to(out.dtype)
        return out

    def decoding_step(self):
        """A next-token step for `sampling.sample` ([batch, pos] ids, no padding -> [batch, vocab] logits) that
        routes only each new position (the module docstring); None where the plain twin may not stand in for
        the bridge, so that the sampler calls the router on the whole sequence instead."""
        if not self.memory:
            return cached_step(self.model)
        twin = trusted_twin(self.model)
        if twin is None:
            return None
        return _CachedRoute(self, twin)


def load_checkpoint(path: str | Path, model, threshold: float | None = None) -> Router:
    """A trained SERAC (scope classifier + counterfactual model) from its folder, for `model` only."""
    from safetensors.torch import load_file

    folder = Path(path)
    if not (folder / CONFIG).is_file() or not (folder / CHECKPOINT).is_file():
        raise KelocateError(f"{str(folder)!r} holds no SERAC checkpoint ({CONFIG} and {CHECKPOINT}); train one "
                            "with `kelocate train serac --out DIR`")
    try:
        config = SERACConfig(**json.loads((folder / CONFIG).read_text()))
        tensors = load_file(str(folder / CHECKPOINT))
    except Exception as exc:  # a damaged or foreign file: one line
        raise KelocateError(f"{str(folder)!r} is not a usable SERAC checkpoint ({type(exc).__name__}: {exc}); "
                            "train one with `kelocate train serac --out DIR`") from None
    if config.fingerprint != model.fingerprint:
        raise KelocateError(f"the SERAC checkpoint in {str(folder)!r} was trained for model {config.fingerprint}, "
                            f"not {model.name} ({model.fingerprint}); train one for this model")
    scope = ScopeClassifier(config.d_model * len(config.scope_layers), config.scope_dim).to(model.device)
    scope.load_state_dict({k.removeprefix("scope/"): v for k, v in tensors.items() if k.startswith("scope/")})
    trained = {k.removeprefix("cf/"): v for k, v in tensors.items() if k.startswith("cf/")}
    counterfactual = counterfactual_model(model, config.cf_layers, trained)
    return Router(model, scope, counterfactual, config, str(folder.resolve()), threshold)

class _CachedRoute:
    """One sampling loop's state of `Router.decoding_step`: the base cache, the running sums of the
    unit-normalised scope states, and the counterfactual caches per (row, edit)."""

    def __init__(self, router: Router, twin) -> None:
        self.router, self.twin = router, twin
        self.base_cache, self.length = None, 0
        self.sums: torch.Tensor | None = None  # [batch, layers * d]: sum of unit states over real positions
        self.count: int = 0  # real positions summed (those after the front special tokens)
        self.cf: dict[tuple[int, int], tuple[object, int]] = {}  # (row, edit) -> (cache, ids consumed)

    def _base(self, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], bool]:
        """Last-position base logits and the scope layers' states of the positions this call ran.

        The states are the decoder layers' own outputs (the bridge's `hook_resid_post`), caught by hooks on
        the twin's layers for this call: HF's `output_hidden_states` gives the last layer after the final
        norm, which the whole-sequence router never reads."""
        new = self.base_cache is not None and ids.shape[1] == self.length + 1
        if not new:
            self.base_cache, self.sums, self.count, self.cf = None, None, 0, {}
        layers = self.twin.model.layers
        caught: dict[int, torch.Tensor] = {}

        def catch(index: int):
            def hook(module, args, output) -> None:
                caught[index] = output[0] if isinstance(output, tuple) else output
            return hook

        wanted = [layer % len(layers) for layer in self.router.config.scope_layers]
        handles = [layers[layer].register_forward_hook(catch(layer)) for layer in dict.fromkeys(wanted)]
        try:
            out = self.twin(ids[:, -1:] if new else ids, use_cache=True, logits_to_keep=1,
                            **cache_kwargs(self.twin, self.base_cache))
        finally:
            for handle in handles:
                handle.remove()
        self.base_cache, self.length = returned_cache(out), ids.shape[1]
        return out.logits[:, -1], [caught[layer] for layer in wanted], new

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        router = self.router
        logits, states, new = self._base(ids)
        first = 0 if new else router.front  # positions of this call that count (not front special tokens)
        unit = torch.cat([torch.nn.functional.normalize(h.float(), dim=-1)[:, first:].sum(1) for h in states], -1)
        self.sums = unit if self.sums is None else self.sums + unit
        self.count += states[0].shape[1] - first
        features = self.sums / max(self.count, 1)
        best, which = router.scope.logits(router.scope.embed(features), router._vectors).max(-1)
        in_scope = (torch.sigmoid(best) > router.threshold) & (ids.shape[1] > router.front)
        out = logits.clone()
        for b in in_scope.nonzero()[:, 0].tolist():
            edit = int(which[b])
            out[b] = self._counterfactual(b, edit, ids[b]).to(out.dtype)
        return out

    def _counterfactual(self, row: int, edit: int, ids: torch.Tensor) -> torch.Tensor:
        """The counterfactual model's next-token logits for '<fact prefix><input so far>' (cached per pair)."""
        cf = self.router.counterfactual
        cache, consumed = self.cf.get((row, edit), (None, 0))
        if cache is not None and consumed == ids.shape[0] - 1:
            run = ids[-1:][None]
        else:
            prefix = torch.tensor(self.router._prefixes[edit], device=ids.device)
            run, cache = torch.cat([prefix, ids[self.router.front:]])[None], None
        out = cf(input_ids=run, use_cache=True, logits_to_keep=1, **cache_kwargs(cf, cache))
        self.cf[(row, edit)] = (returned_cache(out), ids.shape[0])
        return out.logits[0, -1]
