"""Integrated gradients of an answer's probability w.r.t. the MLP neurons (`mlp.hook_post`), two engines.

Dai et al.'s knowledge-neuron attribution of neuron i in layer l is

    score_i = a_i * (1/m) * sum_{k=1..m} dF(alpha_k a) / dx_i,  alpha_k = k/m,

where a is layer l's MLP activation (the input of `down_proj`) at the scaled position, x the scaled
vector put in its place, and F the target. The scaled position is the prompt's last token (the one that
predicts the answer). The target is p(answer) = the product of the answer tokens' probabilities, i.e.
exp of the sum of their teacher-forced log-probabilities (`target="prob"`, Dai et al.'s choice), or that
sum itself (`target="logprob"`). A long answer's p(answer) can lie below float32's range, so both engines take
the gradient of p(answer) / p_clean(answer) and scale the scores back in float64 (`_scale_of`).

- `ig_reference`: a full forward and backward of the TransformerBridge per layer and step batch, with a
  `Patch` that replaces `blocks.{l}.mlp.hook_post` at the position (as the public implementations do).
- `ig_fast`: exact prefix reuse. Scaling position p of layer l changes nothing at positions < p, nothing
  below layer l, and at layer l only what follows the MLP. One clean run gives every layer's keys/values
  and residual streams; for layer l the m steps then run as one batch from layer l's MLP output, only
  for positions p.., on top of the clean key/value prefix (`LlamaStack`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from kelocate.errors import KelocateError
from kelocate.model.sites import Patch, patching, read, site
from kelocate.model.stack import KV, LlamaStack, StackUnavailable, guarded_stack

TARGETS = ("prob", "logprob")
# an answer: its text, its token ids, or None for the model's own top next token
Answer = str | Sequence[int] | None


@dataclass(frozen=True)
class IGProblem:
    """A prompt with its answer tokens, teacher-forced: ids = BOS + prompt + answer[:-1]."""

    prompt: str
    answer: str
    ids: torch.Tensor  # [T]
    position: int  # the scaled position: the prompt's last token, which predicts answer_ids[0]
    answer_ids: tuple[int, ...]

    @property
    def answer_positions(self) -> list[int]:
        """Positions whose next-token distributions score the answer tokens."""
        return list(range(self.position, self.position + len(self.answer_ids)))


def make_problem(model, prompt: str, answer: Answer = None) -> IGProblem:
    """Tokenize `prompt` and `answer`: its text, its token ids as they are, or None (the model's own top next
    token). Ids let a token that is not text on its own (a space, a newline, a piece of a word) be the answer."""
    prompt_ids = model.encode(prompt).ids
    if len(prompt_ids) == 0:
        raise KelocateError("the prompt is empty; pass some text (e.g. 'SMAP was created in')")
    if answer is None:
        top = int(model.logits(prompt_ids)[0, -1].argmax())
        answer_ids = [top]
        answer = model.decode([top])
    elif isinstance(answer, str):
        answer_ids = model.answer_ids(prompt, answer)
    else:
        answer_ids = [int(t) for t in answer]
        if not answer_ids:
            raise KelocateError("the answer has no token; pass the answer's text (e.g. --answer Japan)")
        answer = model.decode(answer_ids)
    ids = torch.cat([prompt_ids, torch.tensor(answer_ids[:-1], dtype=torch.long)])
    return IGProblem(prompt, answer, ids, len(prompt_ids) - 1, tuple(int(t) for t in answer_ids))


def _target(logits: torch.Tensor, problem: IGProblem, target: str, shift: float = 0.0) -> torch.Tensor:
    """Target per batch row from logits [batch, n_answer, vocab] at the answer positions; with `shift` (prob
    only) exp(log p(answer) - shift), i.e. p(answer) over the constant e^shift."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    ids = torch.tensor(problem.answer_ids, device=logits.device)
    total = logp.gather(-1, ids[None, :, None].expand(logp.shape[0], -1, 1)).squeeze(-1).sum(-1)
    return (total - shift).exp() if target == "prob" else total


def _scale_of(clean_logits: torch.Tensor, problem: IGProblem, target: str) -> tuple[float, float]:
    """(F at the clean activations, the shift its gradients are taken at).

    p(answer) of a long answer (a ConvSent reply of 30 tokens) is far below float32's range: its gradients
    would be denormal (very slow on a CPU) or zero. So the engines differentiate p(answer) / p_clean (a
    constant factor, close to 1) and multiply the scores back by p_clean in float64 (`_scores`)."""
    width = len(problem.answer_ids)
    log_p = float(_target(clean_logits[:, problem.position:problem.position + width], problem, "logprob")[0])
    if target != "prob":
        return log_p, 0.0
    return math.exp(log_p), (log_p if math.isfinite(log_p) else 0.0)  # p_clean = 0: nothing to rescale by


def _scores(base: torch.Tensor, grad: torch.Tensor, shift: float) -> torch.Tensor:
    """One layer's IG scores a * mean_k dF/dx in float64, the shift's factor e^shift restored."""
    return (base.double() * grad.double().mean(0) * math.exp(shift)).cpu()


def _check(model, problem: IGProblem, steps: int, target: str, layers: Sequence[int] | None) -> list[int]:
    if steps < 1:
        raise KelocateError(f"--steps must be at least 1, got {steps}")
    if target not in TARGETS:
        raise KelocateError(f"unknown target {target!r}; use prob or logprob")
    return list(range(model.n_layers)) if layers is None else [model.check_layer(layer) for layer in layers]


def alphas(steps: int, device: torch.device | str = "cpu",
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The Riemann points k/m, k = 1..m."""
    return torch.arange(1, steps + 1, device=device, dtype=dtype) / steps


@dataclass
class Attribution:
    """IG scores [layer, neuron] of one prompt (rows of layers not computed are NaN)."""

    problem: IGProblem
    scores: torch.Tensor  # [n_layers, d_mlp], float64 (p(answer) of a long answer is below float32's range)
    activations: torch.Tensor  # [n_layers, d_mlp]: the clean activations a at the scaled position
    target_value: float  # F at the clean activations
    target: str
    steps: int
    layers: list[int]
    engine: str
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def target_description(self) -> str:
        n = len(self.problem.answer_ids)
        what = "p(answer)" if self.target == "prob" else "log p(answer)"
        how = ("exp of the sum of the log-probs" if self.target == "prob" else "the sum of the log-probs")
        return (f"{what} = {how} of its {n} token{'s' if n > 1 else ''}; the MLP activation scaled is the "
                f"prompt's last position ({self.problem.position})")


@contextlib.contextmanager
def frozen_params(module: torch.nn.Module) -> Iterator[None]:
    """Turn off parameter gradients for a while (autograd then keeps only what input gradients need)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# ====================================================================== reference engine


def ig_reference(model, problem: IGProblem, steps: int = 20, target: str = "prob",
                 layers: Sequence[int] | None = None) -> Attribution:
    """IG by full bridge forwards: one batch of m steps per layer, a `Patch` replacing `mlp.hook_post`.

    The clean activations come from `read`; each step batch writes its scaled activations with an
    out-of-place (differentiable) `Patch`, so the gradient reaches them (`model/sites.py`, the one hook
    utility)."""
    layer_list = _check(model, problem, steps, target, layers)
    t0 = time.perf_counter()
    device = model.device
    ids = problem.ids.to(device)[None]
    pos, width = problem.position, len(problem.answer_ids)
    names = [site("mlp_post", layer) for layer in range(model.n_layers)]
    with torch.no_grad():
        logits, cache = read(model, ids, None, names)
    acts = torch.stack([cache[n][0, pos] for n in names]).float()
    value, shift = _scale_of(logits, problem, target)
    scores = torch.full((model.n_layers, model.d_mlp), float("nan"), dtype=torch.float64)
    a_k = alphas(steps, device)
    for layer in layer_list:
        base = cache[names[layer]][0, pos]
        leaf = (a_k[:, None].to(base.dtype) * base[None]).detach().requires_grad_(True)
        scaled = Patch(names[layer], leaf, positions=pos, differentiable=True)  # step k's row: alpha_k * a
        with torch.enable_grad(), patching(model, [scaled]):
            out, _ = read(model, ids.expand(steps, -1), None, [])
            (grad,) = torch.autograd.grad(_target(out[:, pos:pos + width], problem, target, shift).sum(), leaf)
        scores[layer] = _scores(base, grad, shift)
    return Attribution(problem, scores, acts.cpu(), value, target, steps, layer_list, "reference",
                       time.perf_counter() - t0)


# ====================================================================== fast engine


@dataclass
class CleanRun:
    """Everything the fast engine reuses from one clean run of a problem."""

    inputs: list[torch.Tensor]  # inputs[l]: the residual entering block l [1, T, d]
    mids: list[torch.Tensor]  # residual after attention of block l [1, T, d]
    mlp_post: list[torch.Tensor]  # [1, T, d_mlp]
    mlp_out: list[torch.Tensor]  # [1, T, d]
    kv: list[KV]  # keys/values of all positions, per layer
    logits: torch.Tensor  # [1, T, vocab]


@torch.no_grad()
def clean_run(stack: LlamaStack, problem: IGProblem, device: torch.device) -> CleanRun:
    """Run the problem once, keeping each block's residual streams, activations and keys/values."""
    hidden = stack.embed(problem.ids.to(device)[None])
    inputs, mids, posts, outs, kvs = [], [], [], [], []
    for layer in range(stack.n_layers):
        out = stack.block(layer, hidden)
        inputs.append(hidden)
        mids.append(hidden + out.attn_out)
        posts.append(out.mlp_post)
        outs.append(out.mlp_out)
        kvs.append(out.kv)
        hidden = out.hidden
    return CleanRun(inputs, mids, posts, outs, kvs, stack.unembed(hidden))


def scaled_forward(stack: LlamaStack, clean: CleanRun, problem: IGProblem, layer: int,
                   x: torch.Tensor) -> torch.Tensor:
    """Logits [batch, n_answer, vocab] with the activation of `layer` at the position set to x [batch, d].

    Starts at that layer's `down_proj` for positions p.. only, on the clean key/value prefix of positions < p.
    """
    p, width = problem.position, len(problem.answer_ids)
    batch = x.shape[0]
    down = stack.layers[layer].mlp.down_proj
    rows = clean.mids[layer][:, p:].expand(batch, -1, -1)
    first = rows[:, :1] + down(x.to(rows.dtype))[:, None]
    hidden = torch.cat([first, (rows[:, 1:] + clean.mlp_out[layer][:, p + 1:])], dim=1)
    if layer + 1 < stack.n_layers:
        pasts = [kv.select(slice(None), stop=p) for kv in clean.kv]
        hidden, _ = stack.run(hidden, first_layer=layer + 1, start=p, pasts=pasts, keep=False)
    return stack.unembed(hidden[:, :width])


def target_at(model, problem: IGProblem, layer: int, scale: torch.Tensor, target: str = "prob",
              stack: LlamaStack | None = None, clean: CleanRun | None = None) -> torch.Tensor:
    """F with layer `layer`'s activation at the position scaled by each factor in `scale` [batch]."""
    stack = stack or LlamaStack(model.hf)
    clean = clean or clean_run(stack, problem, model.device)
    with torch.no_grad():
        a = clean.mlp_post[layer][0, problem.position]
        x = scale.to(a.device, a.dtype)[:, None] * a[None]
        return _target(scaled_forward(stack, clean, problem, layer, x), problem, target).cpu()


def _staircase(stack: LlamaStack, clean: CleanRun, problem: IGProblem, leaves: dict[int, torch.Tensor],
               target: str, shift: float = 0.0) -> torch.Tensor:
    """Targets of all leaves' rows in one pass: rows of layer l join the batch at layer l's `down_proj`.

    Rows never interact, so running every layer's m steps together through the blocks they share
    is exact; it turns many thin matrix products into a few wide ones.
    """
    p = problem.position
    pasts = [kv.select(slice(None), stop=p) for kv in clean.kv]
    first_layer = min(leaves)
    hidden: torch.Tensor | None = None
    for layer in range(first_layer, stack.n_layers):
        if hidden is not None:
            hidden = stack.block(layer, hidden, p, pasts[layer]).hidden
        if layer in leaves:
            x = leaves[layer]
            rows = clean.mids[layer][:, p:].expand(x.shape[0], -1, -1)
            down = stack.layers[layer].mlp.down_proj
            first = rows[:, :1] + down(x.to(rows.dtype))[:, None]
            new = torch.cat([first, rows[:, 1:] + clean.mlp_out[layer][:, p + 1:]], dim=1)
            hidden = new if hidden is None else torch.cat([hidden, new], dim=0)
    assert hidden is not None
    return _target(stack.unembed(hidden[:, : len(problem.answer_ids)]), problem, target, shift)


# what one batched pass of the fast engine may hold for backward (activations and answer logits), in bytes
PASS_BYTES = 2 * 2**30


def pass_size(model, problem: IGProblem, steps: int, n_scored: int, budget: int = PASS_BYTES) -> int:
    """How many layers' steps one pass of `ig_fast` carries so that it stays within `budget` bytes.

    Every row (a layer's step) keeps, per answer position, what backward needs of each block it runs through
    (about 12 x d_model + 4 x d_mlp values) and its logits over the vocabulary (3 x vocab floats, with the
    log-softmax). An upper bound: SmolLM2 measures 1.4 MB per row and answer token against 2.2 MB here. A
    one-token answer fits in one pass; a ConvSent reply of 30 tokens would otherwise ask for 25 GB."""
    width = len(problem.answer_ids)
    item = model.dtype.itemsize
    vocab = int(model.hf.config.vocab_size)
    per_row = width * (model.n_layers * (12 * model.d_model + 4 * model.d_mlp) * item + 3 * vocab * 4)
    return max(1, min(n_scored, budget // (steps * per_row)))


def ig_fast(model, problem: IGProblem, steps: int = 20, target: str = "prob",
            layers: Sequence[int] | None = None, layers_per_pass: int | None = None) -> Attribution:
    """IG with prefix reuse: same numbers as `ig_reference` (to float tolerance), far fewer FLOPs.

    `layers_per_pass` bounds how many layers' steps share one batched pass (None: as many as fit in
    `PASS_BYTES`, see `pass_size`).
    """
    layer_list = _check(model, problem, steps, target, layers)
    t0 = time.perf_counter()
    stack = guarded_stack(model)  # StackUnavailable when the runner's maths are not the model's
    device = model.device
    pos = problem.position
    chunk = layers_per_pass or pass_size(model, problem, steps, len(layer_list))
    with frozen_params(model.hf):
        clean = clean_run(stack, problem, device)
        acts = torch.stack([clean.mlp_post[layer][0, pos] for layer in range(model.n_layers)]).float()
        value, shift = _scale_of(clean.logits, problem, target)
        scores = torch.full((model.n_layers, model.d_mlp), float("nan"), dtype=torch.float64)
        a_k = alphas(steps, device)
        for i in range(0, len(layer_list), chunk):
            group = layer_list[i:i + chunk]
            bases = {layer: clean.mlp_post[layer][0, pos] for layer in group}
            leaves = {layer: (a_k[:, None].to(b.dtype) * b[None]).detach().requires_grad_(True)
                      for layer, b in bases.items()}
            with torch.enable_grad():
                total = _staircase(stack, clean, problem, leaves, target, shift).sum()
                grads = torch.autograd.grad(total, list(leaves.values()))
            for (layer, base), grad in zip(bases.items(), grads, strict=True):
                scores[layer] = _scores(base, grad, shift)
    return Attribution(problem, scores, acts.cpu(), value, target, steps, layer_list, "fast",
                       time.perf_counter() - t0)


ENGINES = {"fast": ig_fast, "reference": ig_reference}


def integrated_gradients(model, prompt: str, answer: Answer = None, steps: int = 20, target: str = "prob",
                         layers: Sequence[int] | None = None, engine: str = "fast") -> Attribution:
    """IG attribution of every MLP neuron of the chosen layers for `answer` after `prompt`."""
    if engine not in ENGINES:
        raise KelocateError(f"unknown IG engine {engine!r}; use fast or reference")
    problem = make_problem(model, prompt, answer)
    try:
        return ENGINES[engine](model, problem, steps, target, layers)
    except StackUnavailable as exc:
        attribution = ig_reference(model, problem, steps, target, layers)
        attribution.meta["note"] = f"fast engine not used: {exc}; ran the hook-based reference (same numbers)"
        return attribution
