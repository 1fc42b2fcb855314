"""Plain per-cell causal tracing: the reference the fast engine is tested against.

Both loops run the model only through the model floor's one hook utility (`model/sites.py`): a `Patch` for
every write (corrupting the subject's embeddings, restoring or freezing a cell) and `read` for every forward
that keeps activations. Both compute every cell.

`oracle_grids` follows ROME's code: for every cell one forward of a batch of 1 + S copies of the prompt, row 0
clean, rows 1..S corrupted at `hook_embed`, and patches that copy row 0's activations into rows 1..S.
`per_cell_grids` is how TransformerLens's patching utilities work: clean activations read once, then one
forward of the S corrupted rows per cell with a patch that writes the read value.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kelocate.locate.causal_trace.problem import Grids, TraceProblem, answer_probs, corrupt_embeddings, window_range
from kelocate.model.sites import Patch, patching, read
from kelocate.model.sites import site as hook_name


def _site_hooks(problem: TraceProblem, key: str, t: int, layer: int, n_layers: int) -> list[tuple[str, int]]:
    """(hook site, layer) pairs restored for a cell."""
    if key.startswith("hidden"):
        return [("hidden", layer)]
    return [(key, j) for j in window_range(layer, problem.window, n_layers)]


def _corrupt(problem: TraceProblem, rows: slice = slice(None)) -> Patch:
    """The patch that adds the problem's noise to (or puts it in place of) the subject's embeddings of `rows`."""
    return Patch("hook_embed", lambda e: corrupt_embeddings(e.clone(), problem.noise, problem.span, problem.replace),
                 rows=rows)


def _run(model, ids: torch.Tensor, patches: Sequence[Patch], record: Sequence[str] = (),
         rows: slice = slice(None)) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward of `ids` with `patches`: its logits, and a copy of the `rows` of each activation at `record`."""
    kept: dict[str, torch.Tensor] = {}

    def keep(name: str, x: torch.Tensor) -> None:
        kept[name] = x[rows].clone()

    with patching(model, patches):
        logits, _ = read(model, ids, None, record, on=keep)
    return logits, kept


@torch.no_grad()
def oracle_grids(model, problem: TraceProblem) -> Grids:
    """All grids, one batch-(1+S) forward of a `HookedModel`'s bridge per cell (ROME's procedure)."""
    samples, n_layers = problem.samples, model.n_layers
    ids = problem.ids.to(model.device)[None].repeat(1 + samples, 1)
    corrupt = _corrupt(problem, rows=slice(1, None))

    def score(patches: list[Patch]) -> torch.Tensor:
        return answer_probs(_run(model, ids, [corrupt, *patches])[0][:, -1], problem.answer_id)

    def restore(name: str, t: int) -> Patch:  # every row at t takes row 0's (clean) value
        return Patch(name, lambda x: x[0].clone(), positions=t)

    # first pass: corrupted values (rows 1..S) of the severable sites, for the severed variant
    names = {site: [hook_name(site, j) for j in range(n_layers)] for site in problem.severed}
    logits, recorded = _run(model, ids, [corrupt], [n for ns in names.values() for n in ns], rows=slice(1, None))
    base = answer_probs(logits[:, -1], problem.answer_id)

    grids = {}
    for key in problem.grid_keys():
        grid = problem.empty_grid(n_layers, 0.0)
        for t in problem.computed_rows():
            for layer in range(n_layers):
                patches = [restore(hook_name(site, j), t) for site, j in _site_hooks(problem, key, t, layer, n_layers)]
                if key.startswith("hidden_severed_"):
                    site = key.removeprefix("hidden_severed_")  # ROME freezes every layer at t
                    patches += [Patch(n, recorded[n][:, t], positions=t, rows=slice(1, None)) for n in names[site]]
                grid[t, layer] = float(score(patches)[1:].mean())
        grids[key] = grid
    return Grids(float(base[0]), float(base[1:].mean()), grids)


@torch.no_grad()
def per_cell_grids(model, problem: TraceProblem) -> Grids:
    """All grids the TransformerLens-patching way: read clean activations once, one batch-S forward per cell."""
    samples, n_layers = problem.samples, model.n_layers
    ids = problem.ids.to(model.device)[None]
    sites = {"hidden" if key.startswith("hidden") else key for key in problem.grid_keys()}
    clean_logits, clean_cache = read(model, ids, None, [hook_name(s, j) for s in sorted(sites)
                                                        for j in range(n_layers)])
    corrupted_ids = ids.repeat(samples, 1)
    corrupt = _corrupt(problem)
    severable = [hook_name(s, j) for s in problem.severed for j in range(n_layers)]
    corrupted_logits, corr_cache = _run(model, corrupted_ids, [corrupt], severable)

    grids = {}
    for key in problem.grid_keys():
        grid = problem.empty_grid(n_layers, 0.0)
        for t in problem.computed_rows():
            for layer in range(n_layers):
                patches = [corrupt]
                for site, j in _site_hooks(problem, key, t, layer, n_layers):
                    name = hook_name(site, j)
                    patches.append(Patch(name, clean_cache[name][0, t], positions=t))
                if key.startswith("hidden_severed_"):
                    site = key.removeprefix("hidden_severed_")
                    for j in range(layer + 1, n_layers):
                        name = hook_name(site, j)
                        patches.append(Patch(name, corr_cache[name][:, t], positions=t))
                logits, _ = _run(model, corrupted_ids, patches)
                grid[t, layer] = float(answer_probs(logits[:, -1], problem.answer_id).mean())
        grids[key] = grid
    clean = float(answer_probs(clean_logits[:, -1], problem.answer_id)[0])
    return Grids(clean, float(answer_probs(corrupted_logits[:, -1], problem.answer_id).mean()), grids)
