"""What the hardware allows: lower bounds on ROME's target optimisation and on decoding, measured in the run.

Two of issue 23's targets sit against limits of the machine rather than of the code, so the benchmark
measures those limits beside the timings instead of asserting them:

- a target-optimisation step of ROME must at least do its matrix products: forward through the layers above
  the edited one at every position the delta reaches (each rewriting row from the subject's last token on),
  the LM head at the positions the loss reads, and the gradient with respect to the inputs of each of those
  products on the way back (the weights take none), i.e. twice the forward's matrix FLOPs.
  `rome_step_floor` counts those FLOPs from the model's shapes and the case's rows and divides them by the
  rate this machine runs a matrix product of that size ([positions, d_model] x [d_model, d_mlp], timed
  here); attention's small products, padding and every elementwise operation are left out: a floor, not an
  estimate.
- a decoded token must at least read every weight matrix once (batch 1: matrix-vector products, bound by
  memory bandwidth): `decode_floor_per_token` times one matrix-vector product through every linear weight
  of the model and the LM head, nothing else.
"""

from __future__ import annotations

import time

import torch


def _best_time(fn, repeats: int = 5) -> float:
    """Fastest of `repeats` runs after one warm-up (a floor wants the machine's best, not its average)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rate(rows: int, d_in: int, d_out: int) -> float:
    """FLOP/s of a float32 [rows, d_in] x [d_in, d_out] product on this machine."""
    x, w = torch.randn(rows, d_in), torch.randn(d_out, d_in)
    return 2 * rows * d_in * d_out / _best_time(lambda: torch.nn.functional.linear(x, w))


def layer_matmul_flops(model) -> int:
    """Matrix FLOPs of one decoder layer at one position (q, k, v, o and the gated MLP's three products)."""
    from kelocate.model.stack import LlamaStack

    stack, d = LlamaStack(model.hf), model.d_model  # the block runner's reading of the config
    q, kv = stack.n_heads * stack.head_dim, stack.n_kv_heads * stack.head_dim
    return 2 * (2 * d * q + 2 * d * kv + 3 * d * model.hf.config.intermediate_size)


def rome_step_floor(model, request, layer: int, templates, hp: dict) -> dict:
    """The matrix FLOPs one of ROME's target steps cannot avoid on this request, and the time they take at
    this machine's matrix rate: {flops, rate, seconds, rows, positions}.

    Counted: the layers above the edited one (the edited layer's own output changes only by the delta, added
    after its MLP), forward and input-gradient backward, at each rewriting row's positions from its edit token
    on and at the essence rows' edit token alone (the KL reads nothing after it); the LM head, forward and
    backward, at the positions the loss reads. Padding, attention's products and the edited layer's forward
    (which the block runner does redo) are left out."""
    from kelocate.edit.target import essence_rows, rewriting_rows

    token = hp.get("token", "last_subject")
    rewrite = rewriting_rows(model, request, templates, token)
    essence = essence_rows(model, request, hp.get("kl_prompts", ["{} is a"]), token) if hp["kl_factor"] > 0 else []
    positions = sum(len(r.ids) - r.position for r in rewrite) + len(essence)
    read = sum(len(r.target) for r in rewrite) + len(essence)
    forward = (model.n_layers - 1 - layer) * positions * layer_matmul_flops(model)
    forward += 2 * read * model.d_model * model.hf.config.vocab_size
    flops = 2 * forward  # the backward's input gradients cost what the forward's products cost
    rows = len(rewrite) + len(essence)
    rate = matmul_rate(positions, model.d_model, model.hf.config.intermediate_size)
    return {"flops": flops, "rate": rate, "seconds": flops / rate, "rows": rows, "positions": positions}


def decode_floor_per_token(model) -> float:
    """Seconds to read every weight matrix once in a batch-1 matrix-vector product (the LM head included)."""
    weights = list({id(m.weight): m.weight for m in model.hf.modules() if isinstance(m, torch.nn.Linear)}.values())
    vectors = {w.shape[1]: torch.randn(1, w.shape[1], dtype=w.dtype, device=w.device) for w in weights}

    @torch.no_grad()
    def sweep() -> None:
        for w in weights:
            torch.nn.functional.linear(vectors[w.shape[1]], w)
    return _best_time(sweep)
