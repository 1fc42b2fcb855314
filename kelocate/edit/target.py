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

Two engines compute the same loss. The reference runs every step as a whole forward of the bridge with the
delta patched in (`engine="bridge"`, the plain loop). The fast one (`engine="stack"`, the default where the
block runner is trusted: `model.stack.guarded_stack`) uses that the delta changes nothing before each row's
edit token and nothing below the edited layer: the rows run once in full without a gradient, and every step
runs only the layers from the edited one up, only at the positions from each row's edit token on, over the
keys/values kept from that first run (`SuffixRun`), and unembeds only the positions the loss reads. Tests
check both give the same loss trajectory and delta to float tolerance; `TargetValues.engine` says which ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from kelocate.edit.keys import Row, batch, subject_row
from kelocate.edit.request import EditRequest
from kelocate.model.scoring import grad_on
from kelocate.model.sites import Patch, patching, site
from kelocate.model.stack import StackUnavailable, SuffixRun, guarded_stack
from kelocate.timing import timed

# a forward of the optimisation: deltas -> (logits at the target positions, logits at the essence positions)
Forward = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TargetValues:
    """Optimised values per site: {kind: v_init + delta} (float32 [d_model]) and how the optimisation went."""

    values: dict[str, torch.Tensor]
    initial: dict[str, torch.Tensor]
    deltas: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)
    nll: float = float("nan")  # final mean negative log-likelihood per target token
    steps: int = 0
    engine: str = "bridge"  # which forward ran: "stack" (cached prefixes, layers above) or "bridge" (the plain loop)

    def summary(self) -> dict:
        return {"steps": self.steps, "final_nll": round(self.nll, 5), "first_loss": round(self.losses[0], 5),
                "delta_norm": {k: round(float(d.norm()), 5) for k, d in self.deltas.items()},
                "init_norm": {k: round(float(v.norm()), 5) for k, v in self.initial.items()}, "engine": self.engine}


def rewriting_rows(model, request: EditRequest, templates: Sequence[str], token: str = "last_subject") -> list[Row]:
    """The prompt after each context template, with the target appended (scored on the target)."""
    target = model.answer_ids(request.prompt, request.target_new)
    return [subject_row(model, t.format(request.prompt), request.subject, target, token) for t in templates]


def essence_rows(model, request: EditRequest, kl_prompts: Sequence[str], token: str = "last_subject") -> list[Row]:
    """'{subject} is a' and the like: where the KL term keeps the subject's other predictions."""
    return [subject_row(model, p.format(request.subject), request.subject, token=token) for p in kl_prompts]


@timed("target")
def optimize_target(model, request: EditRequest, layer: int, kinds: Sequence[str], templates: Sequence[str],
                    hp: dict, engine: str = "auto") -> TargetValues:
    """Optimise deltas at sites `kinds` (e.g. ('mlp',), ('hidden',), ('attn', 'mlp')) of `layer`.

    hp keys: v_lr, v_num_grad_steps, v_weight_decay, clamp_norm_factor, kl_factor, kl_prompts; the
    optimisation stops early once the loss falls below `loss_stop` (default 0.05, as in ROME). `engine`:
    "auto" (the block runner where it is trusted, else the bridge), "stack" or "bridge" (the reference)."""
    token = hp.get("token", "last_subject")
    rewrite = rewriting_rows(model, request, templates, token)
    essence = essence_rows(model, request, hp.get("kl_prompts", ["{} is a"]), token) if hp["kl_factor"] > 0 else []
    rows = rewrite + essence
    initial: dict[str, torch.Tensor] = {}  # each site's value before the delta, captured on the first forward
    targets = _target_positions(rewrite)
    if engine not in ("auto", "stack", "bridge"):
        raise ValueError(f"unknown engine {engine!r}")
    stack = None
    if engine != "bridge":
        try:
            stack = guarded_stack(model)
        except StackUnavailable:
            if engine == "stack":
                raise
    with grad_on(model, []):
        if stack is not None:
            forward = _suffix_forward(model, stack, rows, len(rewrite), layer, kinds, targets, initial)
        else:
            forward = _bridge_forward(model, rows, len(rewrite), layer, kinds, targets, initial)
        return _optimise(forward, kinds, initial, hp, targets, len(rewrite), bool(essence), model.d_model,
                         model.device, "stack" if stack is not None else "bridge")


def _target_positions(rewrite: Sequence[Row]) -> tuple[list[int], list[int], list[int], list[float]]:
    """(row, position, token id, weight) of every target token of the rewriting rows: the logits at
    target_start + j predict target token j, weighted 1/len(target) (a mean per row)."""
    t_rows, t_pos, t_ids, t_weight = [], [], [], []
    for i, r in enumerate(rewrite):
        for j, token in enumerate(r.target):
            t_rows.append(i)
            t_pos.append(r.target_start + j)
            t_ids.append(token)
            t_weight.append(1.0 / len(r.target))
    return t_rows, t_pos, t_ids, t_weight


def _bridge_forward(model, rows: Sequence[Row], n_rewrite: int, layer: int, kinds: Sequence[str],
                    targets: tuple, initial: dict[str, torch.Tensor]) -> Forward:
    """The reference: a whole forward of the bridge per step, the delta added at each row's edit token."""
    ids, mask = batch(model, rows)
    device = ids.device
    n_rows = len(rows)
    positions = torch.tensor([r.position for r in rows], device=device)
    at = torch.zeros(n_rows, ids.shape[1], 1, device=device)
    at[torch.arange(n_rows), positions] = 1.0
    t_rows, t_pos = torch.tensor(targets[0], device=device), torch.tensor(targets[1], device=device)
    e_index = torch.arange(n_rewrite, n_rows, device=device)

    def forward(deltas: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        def add_delta(kind: str):
            def write(x: torch.Tensor) -> torch.Tensor:
                if kind not in initial:
                    initial[kind] = x[0, rows[0].position].detach().float().clone()
                return x + at.to(x.dtype) * deltas[kind].to(x.dtype)
            return write

        # out of place, so that the gradient reaches the delta
        patches = [Patch(site(kind, layer), add_delta(kind), differentiable=True) for kind in kinds]
        with patching(model, patches):
            logits = model.bridge(ids, attention_mask=mask)
        return logits[t_rows, t_pos], logits[e_index, positions[e_index]]
    return forward


def _suffix_forward(model, stack, rows: Sequence[Row], n_rewrite: int, layer: int, kinds: Sequence[str],
                    targets: tuple, initial: dict[str, torch.Tensor]) -> Forward:
    """The fast engine: layers `layer`.. at each row's positions from its edit token on (`SuffixRun`), the
    delta added at the first of them, the final norm and LM head only where the loss reads."""
    ids, _ = batch(model, rows)
    device = ids.device
    starts = torch.tensor([r.position for r in rows], device=device)
    lengths = torch.tensor([len(r.ids) for r in rows], device=device)
    run = SuffixRun(stack, ids, lengths, starts, layer)
    t_rows = torch.tensor(targets[0], device=device, dtype=torch.long)
    t_own = torch.tensor(targets[1], device=device, dtype=torch.long) - starts[t_rows]
    e_rows = torch.arange(n_rewrite, len(rows), device=device)  # the KL reads their edit token: own index 0

    def add_delta(kind: str, delta: torch.Tensor):
        def write(x: torch.Tensor) -> torch.Tensor:
            if kind not in initial:
                initial[kind] = x[0, 0].detach().float().clone()
            return torch.cat([x[:, :1] + delta.to(x.dtype), x[:, 1:]], dim=1)
        return write

    def forward(deltas: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        edits = {kind: add_delta(kind, delta) for kind, delta in deltas.items()}
        hidden = run.run(lambda at: edits if at == layer else None)
        read = torch.cat([hidden[t_rows, t_own], hidden[e_rows, 0]])
        logits = stack.unembed(read)
        return logits[:len(t_rows)], logits[len(t_rows):]
    return forward


def _optimise(forward: Forward, kinds: Sequence[str], initial: dict[str, torch.Tensor], hp: dict, targets: tuple,
              n_rewrite: int, kl: bool, d_model: int, device: torch.device, engine: str) -> TargetValues:
    """ROME's loop over a forward: Adam on the deltas, the norm clamp after each step, early stop.

    With `adaptive_nll` (PMET's profiles, as PMET's own optimisation runs): on a step where the new target is
    already the argmax at every target position of every rewriting row, the next steps weigh the NLL by 0.1
    (back to 1 as soon as it is not), and the loop stops there once the weighted KL term is at most
    `kl_stop` (0.01); the loss-below-`loss_stop` test comes first, on the weighted loss."""
    deltas = {k: torch.zeros(d_model, device=device, requires_grad=True) for k in kinds}
    t_ids = torch.tensor(targets[2], device=device)
    t_weight = torch.tensor(targets[3], device=device)
    kl_init = None
    optimiser = torch.optim.Adam(list(deltas.values()), lr=hp["v_lr"])
    losses: list[float] = []
    nll_value, steps = float("nan"), 0
    adaptive, nll_factor = bool(hp.get("adaptive_nll", False)), 1.0
    for step in range(int(hp["v_num_grad_steps"])):
        steps = step + 1
        optimiser.zero_grad()
        t_logits, e_logits = forward(deltas)
        logp = torch.log_softmax(t_logits.float(), dim=-1)
        target_logp = logp.gather(1, t_ids[:, None])[:, 0]
        nll = -(target_logp * t_weight).sum() / n_rewrite
        loss = nll_factor * nll
        kl_term = torch.zeros((), device=device)
        if kl:
            e_logp = torch.log_softmax(e_logits.float(), dim=-1)
            if kl_init is None:
                kl_init = e_logp.detach().clone()
            kl_term = hp["kl_factor"] * torch.nn.functional.kl_div(kl_init, e_logp, log_target=True,
                                                                   reduction="batchmean")
            loss = loss + kl_term
        for kind, delta in deltas.items():
            loss = loss + hp["v_weight_decay"] * delta.norm() / initial[kind].norm() ** 2
        nll_value = float(nll.detach())
        losses.append(float(loss.detach()))
        if losses[-1] < hp.get("loss_stop", 0.05):
            break  # ROME's rule: stop once the loss is small
        if adaptive:
            if bool((target_logp == logp.max(-1).values).all()):  # the target is the argmax everywhere
                nll_factor = 0.1
                if float(kl_term.detach()) <= hp.get("kl_stop", 0.01):
                    break
            else:
                nll_factor = 1.0
        if step == int(hp["v_num_grad_steps"]) - 1:
            break  # the last step takes no gradient
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            for kind, delta in deltas.items():
                limit = hp["clamp_norm_factor"] * initial[kind].norm()
                if delta.norm() > limit:
                    delta.mul_(limit / delta.norm())
    final = {k: d.detach().clone() for k, d in deltas.items()}
    return TargetValues({k: initial[k] + final[k] for k in kinds}, {k: initial[k] for k in kinds}, final,
                        losses, nll_value, steps, engine)
