"""Run a model with activations replaced or edited at named hook points and positions.

The user-facing hooking and patching API (TransformerLens hooks on the model's bridge):

- `site(kind, layer)`: hook name of a site (embed, resid_pre, hidden, attn, mlp, mlp_post).
- `Patch(hook, value, positions, rows)`: set the activation at `hook` (selected positions / batch rows) to
  `value` (a tensor broadcast to the selection, or a float), or to `value(current)` when it is a function.
- `patching(model, patches)`: a context manager; every forward of `model.bridge` inside it is patched.
- `run_patched(model, inputs, patches, answer=None)`: logits, or the answer's probability per batch row.
- `cache_activations(model, inputs, hooks)`: activations of a run, for patching them into another.
- `patch_sweep(model, clean, corrupted, kind)`: clean -> corrupted activation patching of every
  (position, layer), batched: one batch row per cell.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kelocate.errors import KelocateError
from kelocate.model import HookedModel

Index = int | slice | Sequence[int] | None
Value = torch.Tensor | float | Callable[[torch.Tensor], torch.Tensor]


def site(kind: str, layer: int | None = None) -> str:
    """TransformerLens hook name: site('mlp', 3) == 'blocks.3.hook_mlp_out'; site('embed') == 'hook_embed'."""
    return HookedModel.hook_name(kind, layer)


@dataclass(frozen=True)
class Patch:
    """Replace (tensor / float) or edit (function) the activation at `hook` for some positions and rows.

    positions / rows: an int, a slice, a list, or None (all). With lists for both, every (row, position)
    pair of the two lists is patched. A tensor value broadcasts to the selection, e.g. a [d_model] vector,
    or ``clean_cache[name][:, 4]`` for `positions=4`.
    """

    hook: str
    value: Value
    positions: Index = None
    rows: Index = None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Patch activation `x` [batch, pos, ...] in place and return it."""
        key = _key(self.rows, self.positions)
        current = x[key]
        if callable(self.value):
            new = self.value(current)
        else:
            new = torch.as_tensor(self.value, dtype=x.dtype, device=x.device)
        x[key] = new.to(dtype=x.dtype, device=x.device).expand_as(current)
        return x


def _key(rows: Index, positions: Index) -> tuple:
    r = slice(None) if rows is None else rows
    p = slice(None) if positions is None else positions
    if isinstance(r, Sequence) and isinstance(p, Sequence):  # outer product, not pairwise
        return torch.as_tensor(list(r))[:, None], torch.as_tensor(list(p))[None, :]
    return (list(r) if isinstance(r, Sequence) else r), (list(p) if isinstance(p, Sequence) else p)


def _hooks(patches: Sequence[Patch]) -> list[tuple[str, Callable]]:
    def make(patch: Patch) -> Callable:
        def hook(x: torch.Tensor, hook) -> torch.Tensor:
            return patch.apply(x)

        return hook

    return [(p.hook, make(p)) for p in patches]


@contextlib.contextmanager
def patching(model: HookedModel, patches: Sequence[Patch]) -> Iterator[HookedModel]:
    """Inside the block, every forward of `model.bridge` (e.g. `model.top_k(...)`) runs with `patches`."""
    with model.bridge.hooks(fwd_hooks=_hooks(patches)):
        yield model


def _inputs(
    model: HookedModel, inputs: str | Sequence[str] | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [batch, pos] and attention mask from a prompt, a list of prompts (right-padded) or ids."""
    if isinstance(inputs, torch.Tensor):
        ids = (inputs[None] if inputs.dim() == 1 else inputs).to(model.device)
        return ids, torch.ones_like(ids)
    if isinstance(inputs, str):
        inputs = [inputs]
    return model.batch_ids(list(inputs))


def _answer_ids(model: HookedModel, prompts: Sequence[str] | None, answer, batch: int) -> torch.Tensor:
    answers = answer if isinstance(answer, list | tuple) else [answer] * batch
    if len(answers) != batch:
        raise KelocateError(f"got {len(answers)} answers for a batch of {batch}")
    out = []
    for i, a in enumerate(answers):
        if isinstance(a, int):
            out.append(a)
        elif prompts is None:
            raise KelocateError("a text answer needs text prompts; pass token ids as answers for id inputs")
        else:
            out.append(model.answer_ids(prompts[i], a)[0])
    return torch.tensor(out, dtype=torch.long)


@torch.no_grad()
def run_patched(
    model: HookedModel,
    inputs: str | Sequence[str] | torch.Tensor,
    patches: Sequence[Patch] = (),
    answer: str | int | Sequence[str | int] | None = None,
) -> torch.Tensor:
    """Run with `patches`: logits [batch, pos, vocab], or with `answer` the probability of the answer's
    (first) token after the last real token of each row [batch]. Prompts of unequal length are padded.
    """
    ids, mask = _inputs(model, inputs)
    logits = model.bridge.run_with_hooks(ids, fwd_hooks=_hooks(patches), attention_mask=mask)
    if answer is None:
        return logits
    prompts = (
        [inputs] if isinstance(inputs, str) else (None if isinstance(inputs, torch.Tensor) else list(inputs))
    )
    target = _answer_ids(model, prompts, answer, ids.shape[0]).to(logits.device)
    last = mask.sum(dim=1) - 1
    rows = torch.arange(ids.shape[0], device=logits.device)
    probs = torch.softmax(logits[rows, last].float(), dim=-1)
    return probs[rows, target]


@torch.no_grad()
def cache_activations(
    model: HookedModel, inputs: str | Sequence[str] | torch.Tensor, hooks: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Activations {hook name: [batch, pos, ...]} of one (unpatched) run."""
    ids, mask = _inputs(model, inputs)
    wanted = list(hooks)
    _, cache = model.bridge.run_with_cache(ids, names_filter=lambda n: n in wanted, attention_mask=mask)
    missing = [h for h in wanted if h not in cache]
    if missing:
        raise KelocateError(
            f"unknown hook point {missing[0]!r}; use names like {site('mlp', 0)!r} (see site())"
        )
    return {h: cache[h] for h in wanted}


@dataclass
class PatchSweep:
    """Answer probability after patching each (position, layer) from the clean into the corrupted run."""

    probs: np.ndarray  # [positions, layers]
    positions: list[int]
    layers: list[int]
    kind: str
    answer: str
    answer_id: int
    clean_prob: float
    corrupted_prob: float
    tokens: list[str]


@torch.no_grad()
def patch_sweep(
    model: HookedModel,
    clean: str,
    corrupted: str,
    kind: str = "hidden",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    answer: str | None = None,
    batch_size: int = 32,
) -> PatchSweep:
    """Clean -> corrupted activation patching: for every cell, run `corrupted` with the clean activation of
    `kind` at one (position, layer); cells are batched `batch_size` at a time. Both prompts must have the
    same number of tokens. The answer defaults to the clean run's top token.
    """
    clean_ids = model.encode(clean).ids
    corr_ids = model.encode(corrupted).ids
    if len(clean_ids) != len(corr_ids):
        raise KelocateError(
            f"the clean and corrupted prompts have {len(clean_ids)} and {len(corr_ids)} tokens; "
            "activation patching needs prompts of the same token length"
        )
    layers = list(range(model.n_layers)) if layers is None else [model.check_layer(j) for j in layers]
    positions = (
        list(range(len(clean_ids))) if positions is None else [int(p) % len(clean_ids) for p in positions]
    )
    names = {j: site(kind, j) for j in layers}
    cache = cache_activations(model, clean_ids, list(names.values()))
    answer_id = (
        int(model.logits(clean_ids)[0, -1].argmax()) if answer is None else model.answer_ids(clean, answer)[0]
    )
    base = run_patched(model, torch.stack([clean_ids, corr_ids]), [], [answer_id, answer_id])
    cells = [(p, j) for p in positions for j in layers]
    out = np.zeros(len(cells))
    for lo in range(0, len(cells), batch_size):
        chunk = cells[lo : lo + batch_size]
        patches = []
        for j in sorted({j for _, j in chunk}):
            rows = [i for i, (_, jj) in enumerate(chunk) if jj == j]
            pos = [chunk[i][0] for i in rows]
            patches.append(Patch(names[j], _pairs(rows, pos, cache[names[j]][0, pos])))
        ids = corr_ids[None].repeat(len(chunk), 1)
        out[lo : lo + len(chunk)] = run_patched(model, ids, patches, [answer_id] * len(chunk)).cpu().numpy()
    return PatchSweep(
        out.reshape(len(positions), len(layers)),
        positions,
        layers,
        kind,
        model.decode([answer_id]),
        int(answer_id),
        float(base[0]),
        float(base[1]),
        model.tokens(clean),
    )


def _pairs(
    rows: list[int], positions: list[int], values: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """An edit that writes values[i] at (rows[i], positions[i]) of the whole activation."""
    r, p = torch.tensor(rows), torch.tensor(positions)

    def edit(x: torch.Tensor) -> torch.Tensor:
        x[r.to(x.device), p.to(x.device)] = values.to(dtype=x.dtype, device=x.device)
        return x

    return edit
