"""SERAC (Mitchell et al. 2022): edits go to a memory, not into the weights. A scope classifier decides
whether an input is about a stored edit; in-scope inputs are answered by a counterfactual model that reads
the retrieved edit before the input, all others by the unchanged base model.

Here both small models are trained by kelocate (`train`, `kelocate train serac`):
- the scope classifier is an embedding classifier (SERAC's dual-encoder variant): the base model's hidden
  states at `scope_layers`, unit-normalised per token and averaged over the text so far, go through a
  learned projection; an (edit, input) pair is in scope when sigmoid(scale * cos + bias) > threshold. The
  edit is embedded from its fact sentence ('<prompt> <target_new>'). Trained with binary cross-entropy on
  each training edit's prompt and paraphrases (positives, also with part of an answer after them, since
  the router decides at every answer position), its subject's other facts and unrelated prompts (hard
  negatives), and every other edit's inputs in the batch (negatives, weighted up: an input is routed when
  ANY stored edit claims it, so per-pair false positives must be rarer than one in the memory's size).
- the counterfactual model is a copy of the base model whose `cf_layers` are trained (the other weights
  stay shared with the base) to answer '<fact>\\n<input>' with the edit's target for in-scope inputs and
  with the true answer for the subject's other facts (so a misrouted neighbour is not overwritten).

Serving: the editor installs a router on the model (`HookedModel.router`), which stands in for the
forward everywhere the model is scored or generates, so every metric works on a SERAC model unchanged.
The router is a language model in its own right: each next-token prediction routes the text up to that
position (prefix averages are causal, so the whole sequence is routed in one base forward), and each
in-scope position takes the counterfactual model's logits for its retrieved edit. With an empty memory
it returns the base forward itself. No weight changes: the record stores the memory before and after,
and its revert restores the memory exactly.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kelocate.edit.base import Editor
from kelocate.edit.methods.ft import id_batch, masked_target_loss
from kelocate.edit.methods.ice import fact_text
from kelocate.edit.request import EditRequest
from kelocate.edit.training import Checkpoints, TrainingEdit, loss_row, with_overrides
from kelocate.errors import KelocateError
from kelocate.model import tokens
from kelocate.model.sites import site
from kelocate.model.twin import plain_twin

CHECKPOINT = "serac.safetensors"
CONFIG = "serac.json"


@dataclass
class SERACConfig:
    """What a SERAC checkpoint was trained for and how."""

    scope_layers: list[int]
    cf_layers: list[int]
    scope_dim: int = 128
    threshold: float = 0.5
    separator: str = "\n"
    classifier_steps: int = 300
    cf_steps: int = 600
    classifier_lr: float = 1e-3
    cf_lr: float = 3e-4
    batch_size: int = 8
    scope_batch_size: int = 128
    other_weight: float = 10.0
    save_every: int = 50
    seed: int = 0
    fingerprint: str = ""
    d_model: int = 0
    trained_steps: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.classifier_steps + self.cf_steps


def profile_config(model, **overrides: Any) -> SERACConfig:
    """Training settings from the model's profile ([serac]); keyword overrides that are None are ignored."""
    from kelocate.edit.config import resolve

    hp = resolve("serac", model)
    fields = set(SERACConfig.__dataclass_fields__)
    config = SERACConfig(**{k: v for k, v in hp.items() if k in fields})
    # profile layers counted from the end (generic: the last 4, the last 8th) keep to the model's depth
    for key in ("scope_layers", "cf_layers"):
        kept = sorted({layer % model.n_layers for layer in getattr(config, key) if -model.n_layers <= layer
                       < model.n_layers})
        setattr(config, key, kept or [model.n_layers - 1])
    return with_overrides(config, overrides)


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
    """The bridge's logits and the hidden states (residual stream after each of `layers`), one forward."""
    kept: dict[int, torch.Tensor] = {}

    def keeper(layer):
        def hook(x, hook):
            kept[layer] = x.detach()
        return hook

    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(site("hidden", layer), keeper(layer)) for layer in layers]):
        logits = model.bridge(ids, attention_mask=mask)
    return logits, [kept[layer] for layer in layers]


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


def memory_of(model) -> list[dict]:
    """The requests in the model's SERAC memory, as dicts (empty without a router)."""
    router = model.router
    return [r.to_json() for r in router.memory] if isinstance(router, Router) else []


def set_memory(model, memory: Sequence[dict], checkpoint: str | None) -> None:
    """Make the model's SERAC memory `memory`, installing the router from `checkpoint` when it has none."""
    router = model.router
    if not isinstance(router, Router):
        if not memory:
            return
        if checkpoint is None:
            raise KelocateError("this SERAC edit does not name its checkpoint; apply it with the SERAC editor")
        router = model.router = load_checkpoint(checkpoint, model)
    router.set_memory([EditRequest.from_json(r) for r in memory])


class SERAC(Editor):
    """Edit by adding requests to the memory of a trained SERAC (`checkpoint` = its folder)."""

    method = "serac"
    batch = True
    uses_layers = False
    locate = None

    def __init__(self, config_file=None, checkpoint: str | Path | None = None, **overrides: Any) -> None:
        super().__init__(config_file, **overrides)
        self.checkpoint = checkpoint

    def parameters(self, model, layers: Sequence[int], hp: dict[str, Any]) -> list[str]:
        return []

    def memory(self, model) -> list[dict]:
        return memory_of(model)

    def _check(self, model, requests, layers, hp) -> None:
        if self.checkpoint is None:
            raise KelocateError("serac needs a trained checkpoint: pass --trained DIR (see `kelocate train serac`)")

    def _edit(self, model, requests: list[EditRequest], layers: list[int], hp: dict[str, Any]) -> dict[str, Any]:
        router = model.router
        folder = str(Path(self.checkpoint).resolve())
        if not isinstance(router, Router) or router.checkpoint != folder:
            if router is not None and (not isinstance(router, Router) or router.memory):
                raise KelocateError("this model already serves other edits through another router; revert them "
                                    "first")
            router = model.router = load_checkpoint(folder, model, hp["threshold"])
        router.threshold = float(hp["threshold"])
        router.set_memory(router.memory + list(requests))
        return {"checkpoint": folder, "memory_size": len(router.memory)}


# ---------------------------------------------------------------------- training
@dataclass
class ScopeData:
    """Precomputed classifier inputs: edit features [n_edits, F]; query features [n, F] with the edit each
    query belongs to and whether it is in that edit's scope; per edit, the fact it rewrites (edits of one
    fact to different targets share their scope)."""

    edits: torch.Tensor
    queries: torch.Tensor
    owner: torch.Tensor
    positive: torch.Tensor
    fact: torch.Tensor


def _answer_positions(model, prompt: str, answer: str | None) -> tuple[str, int, int]:
    """Text to embed and the positions [lo, hi) that predict the answer's tokens (the last prompt token and
    the answer's own tokens but the last): the router decides there."""
    n_prompt = len(model.encode(prompt).ids)
    if answer is None:
        return prompt, n_prompt - 1, n_prompt
    n_answer = len(model.answer_ids(prompt, answer))
    sep = "" if prompt.endswith(" ") else " "
    return f"{prompt}{sep}{answer}", n_prompt - 1, n_prompt - 1 + n_answer


def scope_data(model, examples: Sequence[TrainingEdit], layers: Sequence[int]) -> ScopeData:
    """Features of every training edit and of every query position the router decides on."""
    items = []  # (text, lo, hi, owner, positive)
    for i, ex in enumerate(examples):
        r = ex.request
        for prompt in (r.prompt, *r.paraphrases):
            for answer in {r.target_new, r.ground_truth} - {None}:
                items.append((*_answer_positions(model, prompt, answer), i, True))
        for prompt, answer in ex.neighbours:
            items.append((*_answer_positions(model, prompt, answer), i, False))
        for prompt in ex.unrelated:
            items.append((*_answer_positions(model, prompt, None), i, False))
    feats = text_features(model, [t for t, *_ in items], layers)
    queries, owner, positive = [], [], []
    for f, (_, lo, hi, i, pos) in zip(feats, items, strict=True):
        queries.append(f[lo:hi])
        owner += [i] * (hi - lo)
        positive += [pos] * (hi - lo)
    edits = torch.stack([f[-1] for f in text_features(model, [fact_text(ex.request) for ex in examples], layers)])
    facts: dict[tuple[str, str], int] = {}
    fact = [facts.setdefault((ex.request.subject, ex.request.prompt), len(facts)) for ex in examples]
    return ScopeData(edits, torch.cat(queries), torch.tensor(owner), torch.tensor(positive), torch.tensor(fact))


def classifier_step(scope: ScopeClassifier, data: ScopeData, chosen: Sequence[int],
                    other_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Binary cross-entropy of the chosen edits against every query of theirs, averaged over three groups:
    in-scope pairs, each edit against its own hard negatives (the subject's other facts, unrelated prompts)
    and every edit against the other edits' queries (in-batch negatives, weighted `other_weight`: a served
    memory holds many edits, and an input is routed when ANY of them claims it, so false positives per pair
    must be rarer than one in the memory's size)."""
    chosen_t = torch.tensor(list(chosen))
    rows = torch.isin(data.owner, chosen_t).nonzero()[:, 0]
    logits = scope.logits(scope.embed(data.queries[rows]), scope.embed(data.edits[chosen_t]))
    own = data.fact[data.owner[rows], None] == data.fact[chosen_t][None]
    labels = own & data.positive[rows, None]
    groups = (labels, own & ~labels, ~own)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    weights = (1.0, 1.0, other_weight)
    used = [(bce[g].mean(), w) for g, w in zip(groups, weights, strict=True) if g.any()]
    loss = sum(v * w for v, w in used) / sum(w for _, w in used)
    with torch.no_grad():
        right = (logits > 0) == labels
        accuracy = {name: right[g].float().mean() for name, g in zip(("in_scope", "own_negative", "other"), groups,
                                                                       strict=True) if g.any()}
    return {"loss": loss, **{f"accuracy_{k}": v for k, v in accuracy.items()}}


def counterfactual_rows(model, examples: Sequence[TrainingEdit], separator: str) -> list[list[tuple]]:
    """Per training edit: (fact prefix + input ids, answer ids) rows: in-scope inputs answered with the new
    target, the subject's other facts with their own answers."""
    out = []
    with model.without_context():
        for ex in examples:
            r = ex.request
            prefix = fact_prefix(model, r, separator)
            pairs = [(p, r.target_new) for p in (r.prompt, *r.paraphrases)] + list(ex.neighbours)
            out.append([(prefix + input_ids(model, p), list(model.answer_ids(p, a))) for p, a in pairs])
    return out


def train(model, examples: Sequence[TrainingEdit], out_dir: str | Path, config: SERACConfig,
          progress: Callable[[int, int, dict], None] | None = None) -> dict[str, Any]:
    """Train (or resume) SERAC's scope classifier, then its counterfactual model, into `out_dir`."""
    if len(examples) < 2:
        raise KelocateError(f"SERAC training needs at least 2 edits (each is the others' negative), got "
                            f"{len(examples)}")
    config.batch_size = min(config.batch_size, len(examples))  # a small file trains on all of it each step
    config.scope_layers = [model.check_layer(layer) for layer in config.scope_layers]
    config.cf_layers = [model.check_layer(layer) for layer in config.cf_layers]
    config.fingerprint, config.d_model = model.fingerprint, model.d_model
    torch.manual_seed(config.seed)
    scope = ScopeClassifier(model.d_model * len(config.scope_layers), config.scope_dim).to(model.device)
    counterfactual = counterfactual_model(model, config.cf_layers)
    cf_params = dict(counterfactual.named_parameters())
    trained = layer_parameter_names(counterfactual, config.cf_layers)
    scope_opt = torch.optim.Adam(scope.parameters(), lr=config.classifier_lr)
    cf_opt = torch.optim.Adam([cf_params[n] for n in trained], lr=config.cf_lr)
    rng, log, start = random.Random(config.seed), [], 0
    folder = Checkpoints(out_dir, CONFIG, CHECKPOINT, "SERAC")
    state = folder.resume({"fingerprint": model.fingerprint, "scope_layers": config.scope_layers,
                           "cf_layers": config.cf_layers})
    if state is not None:
        scope.load_state_dict(state["scope"])
        with torch.no_grad():
            for name in trained:
                cf_params[name].copy_(state["cf"][name])
        scope_opt.load_state_dict(state["scope_opt"])
        cf_opt.load_state_dict(state["cf_opt"])
        folder.restore_random(state, rng)
        start, log = int(state["step"]), list(state["log"])
    data = scope_data(model, examples, config.scope_layers) if start < config.classifier_steps else None
    rows = counterfactual_rows(model, examples, config.separator)
    flags = {name: p.requires_grad for name, p in model.hf.named_parameters()}
    began = time.perf_counter()
    try:
        for p in model.hf.parameters():  # the shared base weights stay frozen
            p.requires_grad_(False)
        for name in trained:
            cf_params[name].requires_grad_(True)
        for step in range(start, config.steps):
            scoping = step < config.classifier_steps
            size = min(len(examples), config.scope_batch_size) if scoping else config.batch_size
            chosen = rng.sample(range(len(examples)), size)
            with torch.enable_grad():
                if scoping:
                    scope.train()
                    losses = classifier_step(scope, data, chosen, config.other_weight)
                    optimiser, phase = scope_opt, "scope"
                else:
                    counterfactual.train()
                    batch = id_batch([row for i in chosen for row in rows[i]], model.pad_id, model.device)
                    logits = counterfactual(input_ids=batch["ids"], attention_mask=batch["mask"]).logits
                    losses = {"loss": masked_target_loss(logits, batch["ids"], batch["target_mask"])}
                    optimiser, phase = cf_opt, "counterfactual"
                optimiser.zero_grad()
                losses["loss"].backward()
                optimiser.step()
            log.append(loss_row(step + 1, losses, phase=phase))
            if progress is not None:
                progress(step + 1, config.steps, log[-1])
            if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
                config.trained_steps = step + 1
                cf_state = {n: cf_params[n].detach().clone() for n in trained}
                tensors = {f"scope/{k}": v for k, v in scope.state_dict().items()}
                tensors |= {f"cf/{k}": v for k, v in cf_state.items()}
                folder.save({"scope": scope.state_dict(), "cf": cf_state, "scope_opt": scope_opt.state_dict(),
                             "cf_opt": cf_opt.state_dict(), "step": step + 1}, asdict(config), tensors, rng, log)
    finally:
        for name, p in model.hf.named_parameters():
            p.requires_grad_(flags.get(name, p.requires_grad))
    return {"out": str(out_dir), "resumed_from": start, "steps": config.steps,
            "seconds": time.perf_counter() - began, "first": log[0] if log else None,
            "last": log[-1] if log else None}
