"""Activation patching sweeps: clean -> corrupted patching of every (position, layer), batched.

The hooking and patching primitives (`Patch`, `patching`, `run_patched`, `cache_activations`, `site`) live
in `kelocate.model.sites` and are re-exported here and by `import kelocate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kelocate.errors import KelocateError
from kelocate.model.sites import Patch, cache_activations, patching, run_patched, site

__all__ = ["Patch", "PatchSweep", "cache_activations", "patch_sweep", "patching", "run_patched", "site"]


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
    model,
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
