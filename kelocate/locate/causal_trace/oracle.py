"""Plain per-cell causal tracing with TransformerLens hooks: the reference the fast engine is tested against.

`oracle_grids` follows ROME's code: for every cell one forward of a batch of 1 + S copies of the prompt, row 0
clean, rows 1..S corrupted at `hook_embed`, and hooks that copy row 0's activations into rows 1..S.
`per_cell_grids` is how TransformerLens's patching utilities work: clean activations cached once, then one
forward of the S corrupted rows per cell with a hook that writes the cached value. Both compute every cell.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kelocate.locate.causal_trace.problem import Grids, TraceProblem, answer_probs, corrupt_embeddings, window_range
from kelocate.model.sites import site as hook_name

Hook = tuple[str, Callable]


def _site_hooks(problem: TraceProblem, key: str, t: int, layer: int, n_layers: int) -> list[tuple[str, int]]:
    """(hook site, layer) pairs restored for a cell."""
    if key.startswith("hidden"):
        return [("hidden", layer)]
    return [(key, j) for j in window_range(layer, problem.window, n_layers)]


@torch.no_grad()
def oracle_grids(bridge, problem: TraceProblem) -> Grids:
    """All grids, one batch-(1+S) forward per cell through `bridge.run_with_hooks` (ROME's procedure)."""
    samples = problem.samples
    n_layers = int(bridge.original_model.config.num_hidden_layers)
    device = next(bridge.original_model.parameters()).device
    ids = problem.ids.to(device)[None].repeat(1 + samples, 1)

    def corrupt(x: torch.Tensor, hook) -> torch.Tensor:
        corrupt_embeddings(x[1:], problem.noise, problem.span, problem.replace)
        return x

    def score(hooks: list[Hook]) -> torch.Tensor:
        logits = bridge.run_with_hooks(ids, fwd_hooks=[("hook_embed", corrupt)] + hooks)
        return answer_probs(logits[:, -1], problem.answer_id)

    def restore(t: int) -> Callable:
        def hook(x: torch.Tensor, hook) -> torch.Tensor:
            x[1:, t] = x[0, t]
            return x

        return hook

    # first pass: corrupted values (rows 1..S) of the severable sites, for the severed variant
    names = {site: [hook_name(site, j) for j in range(n_layers)] for site in problem.severed}
    recorded: dict[str, torch.Tensor] = {}
    base = score([(n, _recorder(recorded, n, rows=slice(1, None))) for ns in names.values() for n in ns])

    def freeze(name: str, t: int) -> Callable:
        def hook(x: torch.Tensor, hook) -> torch.Tensor:
            x[1:, t] = recorded[name][:, t]
            return x

        return hook

    grids = {}
    for key in problem.grid_keys():
        grid = problem.empty_grid(n_layers, 0.0)
        for t in problem.computed_rows():
            for layer in range(n_layers):
                hooks = [
                    (hook_name(site, j), restore(t))
                    for site, j in _site_hooks(problem, key, t, layer, n_layers)
                ]
                if key.startswith("hidden_severed_"):
                    site = key.removeprefix("hidden_severed_")
                    hooks += [(n, freeze(n, t)) for n in names[site]]  # ROME freezes every layer at t
                grid[t, layer] = float(score(hooks)[1:].mean())
        grids[key] = grid
    return Grids(float(base[0]), float(base[1:].mean()), grids)


@torch.no_grad()
def per_cell_grids(bridge, problem: TraceProblem) -> Grids:
    """All grids the TransformerLens-patching way: cache clean activations, one batch-S forward per cell."""
    samples = problem.samples
    n_layers = int(bridge.original_model.config.num_hidden_layers)
    device = next(bridge.original_model.parameters()).device
    ids = problem.ids.to(device)[None]
    sites = {"hidden" if key.startswith("hidden") else key for key in problem.grid_keys()}
    wanted = {hook_name(s, j) for s in sites for j in range(n_layers)}
    clean_logits, clean_cache = bridge.run_with_cache(ids, names_filter=lambda n: n in wanted)
    corrupted_ids = ids.repeat(samples, 1)

    def corrupt(x: torch.Tensor, hook) -> torch.Tensor:
        return corrupt_embeddings(x, problem.noise, problem.span, problem.replace)

    corr_cache: dict[str, torch.Tensor] = {}
    recorders = [
        (n, _recorder(corr_cache, n))
        for s in problem.severed
        for n in (hook_name(s, j) for j in range(n_layers))
    ]
    corrupted_logits = bridge.run_with_hooks(corrupted_ids, fwd_hooks=[("hook_embed", corrupt)] + recorders)

    def put(value: torch.Tensor, t: int) -> Callable:
        def hook(x: torch.Tensor, hook) -> torch.Tensor:
            x[:, t] = value
            return x

        return hook

    grids = {}
    for key in problem.grid_keys():
        grid = problem.empty_grid(n_layers, 0.0)
        for t in problem.computed_rows():
            for layer in range(n_layers):
                hooks = [("hook_embed", corrupt)]
                for site, j in _site_hooks(problem, key, t, layer, n_layers):
                    name = hook_name(site, j)
                    hooks.append((name, put(clean_cache[name][0, t], t)))
                if key.startswith("hidden_severed_"):
                    site = key.removeprefix("hidden_severed_")
                    for j in range(layer + 1, n_layers):
                        name = hook_name(site, j)
                        hooks.append((name, put(corr_cache[name][:, t], t)))
                logits = bridge.run_with_hooks(corrupted_ids, fwd_hooks=hooks)
                grid[t, layer] = float(answer_probs(logits[:, -1], problem.answer_id).mean())
        grids[key] = grid
    clean = float(answer_probs(clean_logits[:, -1], problem.answer_id)[0])
    return Grids(clean, float(answer_probs(corrupted_logits[:, -1], problem.answer_id).mean()), grids)


def _recorder(store: dict[str, torch.Tensor], name: str, rows: slice = slice(None)) -> Callable:
    """A hook that keeps a copy of its activation's `rows` in `store[name]`."""

    def hook(x: torch.Tensor, hook) -> torch.Tensor:
        store[name] = x[rows].clone()
        return x

    return hook
