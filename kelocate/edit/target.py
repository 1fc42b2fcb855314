"""Target values for rank-one and batch editors: optimise a vector added at the subject's last token.

For one request, a delta is added to one or more sites (ROME: the MLP output of the edited layer; MEMIT:
the hidden state leaving the last layer of the range; PMET: attention and MLP outputs together) at the
subject's last token of every rewriting input (the prompt after each context prefix, followed by the
target) and of the "essence" inputs ('{subject} is a'). The loss is ROME's:

    mean over rewriting inputs of -mean_t log p(target_t)      (make the target come out)
  + kl_factor * KL(p_edited || p_original) at the essence inputs   (keep what the subject is)
  + weight_decay * ||delta|| / ||v_init||^2                  (stay small)

optimised with Adam; after every step delta's norm is clamped to clamp_norm_factor * ||v_init||, where
v_init is the site's original value at the subject's last token of the first rewriting input. The
target value is v_init + delta.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from kelocate.edit.keys import Row, batch, subject_row
from kelocate.edit.request import EditRequest
from kelocate.model.scoring import grad_on
from kelocate.model.sites import Patch, patching, site


@dataclass
class TargetValues:
    """Optimised values per site: {kind: v_init + delta} (float32 [d_model]) and how the optimisation went."""

    values: dict[str, torch.Tensor]
    initial: dict[str, torch.Tensor]
    deltas: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)
    nll: float = float("nan")  # final mean negative log-likelihood per target token
    steps: int = 0

    def summary(self) -> dict:
        return {"steps": self.steps, "final_nll": round(self.nll, 5), "first_loss": round(self.losses[0], 5),
                "delta_norm": {k: round(float(d.norm()), 5) for k, d in self.deltas.items()},
                "init_norm": {k: round(float(v.norm()), 5) for k, v in self.initial.items()}}


def rewriting_rows(model, request: EditRequest, templates: Sequence[str], token: str = "last_subject") -> list[Row]:
    """The prompt after each context template, with the target appended (scored on the target)."""
    target = model.answer_ids(request.prompt, request.target_new)
    return [subject_row(model, t.format(request.prompt), request.subject, target, token) for t in templates]


def essence_rows(model, request: EditRequest, kl_prompts: Sequence[str], token: str = "last_subject") -> list[Row]:
    """'{subject} is a' and the like: where the KL term keeps the subject's other predictions."""
    return [subject_row(model, p.format(request.subject), request.subject, token=token) for p in kl_prompts]


def optimize_target(model, request: EditRequest, layer: int, kinds: Sequence[str], templates: Sequence[str],
                    hp: dict) -> TargetValues:
    """Optimise deltas at sites `kinds` (e.g. ('mlp',), ('hidden',), ('attn', 'mlp')) of `layer`.

    hp keys: v_lr, v_num_grad_steps, v_weight_decay, clamp_norm_factor, kl_factor, kl_prompts; the
    optimisation stops early once the loss falls below `loss_stop` (default 0.05, as in ROME)."""
    token = hp.get("token", "last_subject")
    rewrite = rewriting_rows(model, request, templates, token)
    essence = essence_rows(model, request, hp.get("kl_prompts", ["{} is a"]), token) if hp["kl_factor"] > 0 else []
    rows = rewrite + essence
    ids, mask = batch(model, rows)
    device = ids.device
    n_rows = len(rows)
    positions = torch.tensor([r.position for r in rows], device=device)
    at = torch.zeros(n_rows, ids.shape[1], 1, device=device)
    at[torch.arange(n_rows), positions] = 1.0
    d_model = model.d_model
    deltas = {k: torch.zeros(d_model, device=device, requires_grad=True) for k in kinds}
    initial: dict[str, torch.Tensor] = {}  # each site's value before the delta, captured on the first forward

    def add_delta(kind: str):
        def write(x: torch.Tensor) -> torch.Tensor:
            if kind not in initial:
                initial[kind] = x[0, rows[0].position].detach().float().clone()
            return x + at.to(x.dtype) * deltas[kind].to(x.dtype)
        return write

    # the delta is added at each row's edit token, out of place so that its gradient reaches the delta
    patches = [Patch(site(kind, layer), add_delta(kind), differentiable=True) for kind in kinds]
    # target positions of the rewriting rows: the logits at target_start + j predict target token j
    t_rows, t_pos, t_ids, t_weight = [], [], [], []
    for i, r in enumerate(rewrite):
        for j, token in enumerate(r.target):
            t_rows.append(i)
            t_pos.append(r.target_start + j)
            t_ids.append(token)
            t_weight.append(1.0 / len(r.target))
    t_rows_t, t_pos_t = torch.tensor(t_rows, device=device), torch.tensor(t_pos, device=device)
    t_ids_t, t_weight_t = torch.tensor(t_ids, device=device), torch.tensor(t_weight, device=device)
    e_index = torch.arange(len(rewrite), n_rows, device=device)
    kl_init = None
    optimiser = torch.optim.Adam(list(deltas.values()), lr=hp["v_lr"])
    losses: list[float] = []
    nll_value, steps = float("nan"), 0
    with grad_on(model, []), patching(model, patches):
        for step in range(int(hp["v_num_grad_steps"])):
            steps = step + 1
            optimiser.zero_grad()
            logits = model.bridge(ids, attention_mask=mask)
            logp = torch.log_softmax(logits[t_rows_t, t_pos_t].float(), dim=-1)
            nll = -(logp.gather(1, t_ids_t[:, None])[:, 0] * t_weight_t).sum() / len(rewrite)
            loss = nll
            if essence:
                e_logp = torch.log_softmax(logits[e_index, positions[e_index]].float(), dim=-1)
                if kl_init is None:
                    kl_init = e_logp.detach().clone()
                loss = loss + hp["kl_factor"] * torch.nn.functional.kl_div(
                    kl_init, e_logp, log_target=True, reduction="batchmean")
            for kind, delta in deltas.items():
                loss = loss + hp["v_weight_decay"] * delta.norm() / initial[kind].norm() ** 2
            nll_value = float(nll.detach())
            losses.append(float(loss.detach()))
            if losses[-1] < hp.get("loss_stop", 0.05) or step == int(hp["v_num_grad_steps"]) - 1:
                break  # ROME's rule: stop once the loss is small; the last step takes no gradient
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                for kind, delta in deltas.items():
                    limit = hp["clamp_norm_factor"] * initial[kind].norm()
                    if delta.norm() > limit:
                        delta.mul_(limit / delta.norm())
    final = {k: d.detach().clone() for k, d in deltas.items()}
    return TargetValues({k: initial[k] + final[k] for k in kinds}, {k: initial[k] for k in kinds}, final,
                        losses, nll_value, steps)
