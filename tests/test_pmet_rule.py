"""PMET's own stopping rule in the shared target optimisation (`adaptive_nll`): the NLL weighed by 0.1 on the
steps after one where the target is the argmax at every target position, and a stop there once the weighted
KL is at most 0.01. Checked against a plain loop written from PMET's procedure, on a small linear forward
whose answer is known, and shown to change nothing for the editors that do not ask for it."""

from __future__ import annotations

import torch

from kelocate.edit.target import _optimise

D, VOCAB = 8, 6
HP = {"v_lr": 0.5, "v_num_grad_steps": 25, "v_weight_decay": 0.5, "clamp_norm_factor": 4.0, "kl_factor": 0.0625,
      "loss_stop": 0.05}


def linear_problem(seed: int = 3):
    """Two rewriting rows of two target tokens each and one KL row, logits = (x + delta) @ W^T."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(VOCAB, D, generator=g)
    x = torch.randn(4, D, generator=g)  # the target positions' values before the delta
    x_kl = torch.randn(1, D, generator=g)
    targets = ((0, 0, 1, 1), (0, 1, 0, 1), (3, 4, 3, 4), (0.5, 0.5, 0.5, 0.5))
    initial = {"mlp": x[0].clone()}

    def forward(deltas):
        d = deltas["mlp"]
        return (x + d) @ w.T, (x_kl + 0.05 * d) @ w.T  # the KL prompt barely moves with the delta
    return forward, initial, targets


def reference_loop(forward, initial, targets, hp):
    """PMET's optimisation as its procedure reads, one quantity at a time (per row, then over rows)."""
    delta = torch.zeros(D, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=hp["v_lr"])
    factor, kl_init, losses = 1.0, None, []
    rows = sorted(set(targets[0]))
    for step in range(hp["v_num_grad_steps"]):
        optimiser.zero_grad()
        t_logits, e_logits = forward({"mlp": delta})
        logp = torch.log_softmax(t_logits, dim=-1)
        per_row, argmax_everywhere = [], True
        for row in rows:
            at = [i for i, r in enumerate(targets[0]) if r == row]
            wanted = [logp[i, targets[2][i]] for i in at]
            per_row.append(-sum(wanted) / len(at))
            argmax_everywhere &= all(bool(logp[i, targets[2][i]] == logp[i].max()) for i in at)
        nll = sum(per_row) / len(rows)
        e_logp = torch.log_softmax(e_logits, dim=-1)
        if kl_init is None:
            kl_init = e_logp.detach().clone()
        kl = hp["kl_factor"] * (kl_init.exp() * (kl_init - e_logp)).sum() / e_logp.shape[0]
        decay = hp["v_weight_decay"] * delta.norm() / initial["mlp"].norm() ** 2
        loss = factor * nll + kl + decay
        losses.append(float(loss.detach()))
        if float(loss.detach()) < hp["loss_stop"]:
            break
        if argmax_everywhere:
            factor = 0.1
            if float(kl.detach()) <= hp.get("kl_stop", 0.01):
                break
        else:
            factor = 1.0
        if step == hp["v_num_grad_steps"] - 1:
            break
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            limit = hp["clamp_norm_factor"] * initial["mlp"].norm()
            if delta.norm() > limit:
                delta.mul_(limit / delta.norm())
    return losses, delta.detach()


def run(hp):
    forward, initial, targets = linear_problem()
    return _optimise(forward, ("mlp",), initial, hp, targets, 2, True, D, torch.device("cpu"), "test")


def test_the_adaptive_rule_follows_pmets_procedure_step_by_step():
    hp = {**HP, "adaptive_nll": True}
    values = run(hp)
    losses, delta = reference_loop(*linear_problem(), hp)
    assert len(values.losses) == len(losses) < HP["v_num_grad_steps"]  # it stopped early
    torch.testing.assert_close(torch.tensor(values.losses), torch.tensor(losses), rtol=1e-5, atol=1e-6)
    # float32 sums in another order, carried through the Adam steps
    torch.testing.assert_close(values.deltas["mlp"], delta, rtol=1e-4, atol=1e-5)
    # with the KL stop out of reach, the 0.1 weight engages and the loop goes on: the same procedure again
    weighted = {**hp, "kl_stop": -1.0}
    values = run(weighted)
    losses, delta = reference_loop(*linear_problem(), weighted)
    assert len(values.losses) == len(losses)  # the same decisions at every step
    torch.testing.assert_close(torch.tensor(values.losses), torch.tensor(losses), rtol=1e-4, atol=1e-5)
    # 25 float32 Adam steps: rounding grows to ~1e-5 of the delta's scale
    torch.testing.assert_close(values.deltas["mlp"], delta, rtol=1e-4, atol=1e-4 * float(delta.abs().max()))
    plain = run(HP)  # without the rule: the loop ROME, MEMIT and AlphaEdit run
    assert plain.losses != values.losses  # the weight changed the trajectory


def test_without_the_rule_the_loop_stops_only_on_the_loss_or_the_last_step():
    values = run(HP)
    assert values.losses == run({**HP, "adaptive_nll": False}).losses  # off unless a profile asks for it
    assert len(values.losses) == HP["v_num_grad_steps"] or values.losses[-1] < HP["loss_stop"]
