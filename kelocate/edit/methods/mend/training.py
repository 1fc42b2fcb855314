"""Training a MEND hypernetwork (`kelocate train mend`), as in the paper: for a batch of edits, compute dW from
the gradient factors, run the edited model (W + dW applied through the model's patching, so gradients reach
the hypernetwork), and minimise

    c_edit * NLL(target | prompt and paraphrases) + KL(base || edited) on unrelated prompts (every position)
    and on the edits' neighbours (the positions that predict their answers).

Checkpoints (hypernetwork, optimiser, step, random state, loss log) are written atomically every
`save_every` steps into `mend.json` + `mend.safetensors` (+ the resume state); rerunning `train` with the
same folder resumes from the last one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from kelocate.edit.losses import answer_batch, masked_target_loss, prompt_target_batch
from kelocate.edit.methods.mend.config import CHECKPOINT, CONFIG, MENDConfig
from kelocate.edit.methods.mend.hypernetwork import Hypernetwork, edited_forward, factors
from kelocate.edit.request import EditRequest
from kelocate.edit.training import Checkpoints, TrainingEdit, loss_row
from kelocate.errors import KelocateError
from kelocate.model.scoring import grad_on


def _kl_base_edited(base: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(base || edited) of next-token distributions, averaged over real positions."""
    base_logp = torch.log_softmax(base.float(), dim=-1)
    edited_logp = torch.log_softmax(edited.float(), dim=-1)
    kl = (base_logp.exp() * (base_logp - edited_logp)).sum(-1)
    weight = mask.to(kl.dtype)
    return (kl * weight).sum() / weight.sum()


def _edit_requests(batch: Sequence[TrainingEdit]) -> list[EditRequest]:
    """The prompts trained to give the new target: each request and its paraphrases."""
    out = []
    for item in batch:
        r = item.request
        out.append(r)
        out += [EditRequest(p, r.subject, r.target_new) for p in r.paraphrases if r.subject in p]
    return out


def training_step(model, net: Hypernetwork, batch: Sequence[TrainingEdit], c_edit: float) -> dict[str, torch.Tensor]:
    """MEND's losses for one batch of edits (differentiable in the hypernetwork's parameters): the edit loss,
    and KL(base || edited) over every position of the unrelated prompts plus, for the edits' neighbours
    (the subject's other facts), at the positions that predict their answers: what locality measures."""
    layers = net.config.layers
    found = factors(model, [b.request for b in batch], layers)
    deltas = {layer: net.transforms[str(layer)](u, d) for layer, (u, d) in found.items()}
    edit = prompt_target_batch(model, _edit_requests(batch))
    kept = []  # (ids, mask, positions compared) of the inputs that must not change
    unrelated = [p for b in batch for p in b.unrelated]
    if unrelated:
        ids, mask = model.batch_ids(unrelated)
        kept.append((ids, mask, mask))
    neighbours = [n for b in batch for n in b.neighbours]
    if neighbours:
        near = answer_batch(model, neighbours)
        kept.append((near["ids"], near["mask"], near["target_mask"].roll(-1, dims=1)))  # t - 1 predicts t
    with grad_on(model, []), edited_forward(model, deltas) as forward:
        l_edit = masked_target_loss(forward(edit["ids"], edit["mask"]), edit["ids"], edit["target_mask"])
        edited = [forward(ids, mask) for ids, mask, _ in kept]
    l_loc = torch.zeros((), device=model.device)
    for (ids, mask, where), after in zip(kept, edited, strict=True):
        l_loc = l_loc + _kl_base_edited(model.logits(ids, mask), after, where)
    return {"loss": c_edit * l_edit + l_loc, "edit": l_edit, "locality": l_loc}


def train(model, examples: Sequence[TrainingEdit], out_dir: str | Path, config: MENDConfig,
          progress: Callable[[int, int, dict], None] | None = None) -> dict[str, Any]:
    """Train (or resume training) a MEND hypernetwork for `model` into `out_dir`; returns a summary."""
    if len(examples) < config.batch_size:
        raise KelocateError(f"MEND training needs at least {config.batch_size} edits (the batch size), got "
                            f"{len(examples)}")
    out = Path(out_dir)
    config.layers = [model.check_layer(layer) for layer in config.layers]
    config.fingerprint, config.d_model, config.d_mlp = model.fingerprint, model.d_model, model.d_mlp
    torch.manual_seed(config.seed)
    net = Hypernetwork(config).to(model.device)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
    rng, log, start = random.Random(config.seed), [], 0
    folder = Checkpoints(out, CONFIG, CHECKPOINT, "MEND")
    state = folder.resume({"fingerprint": model.fingerprint, "layers": config.layers})
    if state is not None:
        net.load_state_dict(state["net"])
        optimiser.load_state_dict(state["optimiser"])
        folder.restore_random(state, rng)
        start, log = int(state["step"]), list(state["log"])
    net.train()
    began = time.perf_counter()
    for step in range(start, config.steps):
        batch = rng.sample(list(examples), config.batch_size)
        losses = training_step(model, net, batch, config.c_edit)
        optimiser.zero_grad()
        losses["loss"].backward()
        optimiser.step()
        row = loss_row(step + 1, losses)
        log.append(row)
        if progress is not None:
            progress(step + 1, config.steps, row)
        if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
            net.config.trained_steps = step + 1
            folder.save({"net": net.state_dict(), "optimiser": optimiser.state_dict(), "step": step + 1},
                        asdict(net.config), {f"net/{k}": v for k, v in net.state_dict().items()}, rng, log)
    net.eval()
    return {"out": str(out), "resumed_from": start, "steps": config.steps, "seconds": time.perf_counter() - began,
            "first": log[0] if log else None, "last": log[-1] if log else None}
