"""Training SERAC (`kelocate train serac`): first its scope classifier, then its counterfactual model.

- the scope classifier is trained with binary cross-entropy on each training edit's prompt and paraphrases
  (positives, also with part of an answer after them, since the router decides at every answer position),
  its subject's other facts and unrelated prompts (hard negatives), and every other edit's inputs in the
  batch (negatives, weighted up: an input is routed when ANY stored edit claims it, so per-pair false
  positives must be rarer than one in the memory's size);
- the counterfactual model's `cf_layers` are trained (the other weights stay shared with the base) to answer
  '<fact>\\n<input>' with the edit's target for in-scope inputs and with the true answer for the subject's
  other facts (so a misrouted neighbour is not overwritten).

Checkpoints (`serac.json` + `serac.safetensors` + the resume state) are written atomically every
`save_every` steps; rerunning `train` with the same folder resumes from the last one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from kelocate.edit.losses import id_batch, masked_target_loss
from kelocate.edit.methods.serac.config import CHECKPOINT, CONFIG, SERACConfig
from kelocate.edit.methods.serac.router import (
    ScopeClassifier,
    counterfactual_model,
    fact_prefix,
    input_ids,
    layer_parameter_names,
    text_features,
)
from kelocate.edit.request import fact_text
from kelocate.edit.training import Checkpoints, TrainingEdit, loss_row
from kelocate.errors import KelocateError


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
