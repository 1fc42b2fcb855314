"""The exact fast causal-trace engine.

Gives the same numbers as the per-cell oracle (`oracle.py`) with far less work, using only facts that hold
exactly in a causal decoder:

1. Positions before the subject are identical in the clean and corrupted runs, so restoring them changes
   nothing: those cells get the corrupted score without any computation. So do cells at a token before the
   last whose first change is the last layer's output (its hidden state): the last position never sees it.
2. Restoring at (token t, layer l) changes nothing at positions < t or in layers before the first changed one.
   Each cell therefore starts from the corrupted run's hidden states at that layer, for positions t..T-1 only,
   on top of the corrupted run's keys/values of positions < t (one `LlamaStack` prefix per noise sample,
   tiled over the cells by the block without copies per cell).
3. At the first changed layer only token t changes: for hidden cells the block output is the clean one; for
   an mlp window starting at a the output of block a at t is corrupted(resid_pre + attn) + clean(mlp); for an
   attn window it is one MLP evaluation at a single position (done for all tokens at once). The full blocks
   start one layer later.
4. At the last layer only the last position reaches the logits: the other positions contribute keys and
   values only (`LlamaStack.block(..., last_only=True)`).
5. All cells of one token (every kind and layer) and all noise samples run as one batch, layer by layer: a
   cell joins the batch at its start layer, so early-starting cells never wait for late ones. A batch holds
   at most max_tokens rows x positions, and on the CPU at most CPU_BATCH_BYTES per MLP activation.
6. Windows clipped at layer 0 share their start: [0, b) and [0, b') with b < b' are the same computation up
   to layer b - 1, so the longer one joins the batch at layer b as a copy of the shorter one's rows.
7. p(answer) needs every logit for the normaliser: the final states of all cells are unembedded together at
   the end, in blocks of UNEMBED_ROWS rows (the LM head is read once per block), and only the answer's
   probability is computed (softmax's arithmetic, no [rows, vocab] output written).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from kelocate.locate.causal_trace.problem import (
    Grids,
    TraceProblem,
    corrupt_embeddings,
    severed_key,
    window_range,
)
from kelocate.model.stack import KV, Edit, LlamaStack

# logit rows per unembedding step: fewer rows re-read the LM head more often (slower), more hold more memory
UNEMBED_ROWS = 512
# bytes of one MLP activation ([rows x positions, d_mlp]) per batch at most on the CPU. Tensors over 32 MiB
# (glibc's largest mmap threshold) are fresh memory maps at every allocation, whose page faults cost more than
# the elementwise operations that fill them; below that, time is flat (3 to 24 MiB measured on SmolLM2's shape)
# while the memory a trace holds grows with the batch (+130 MB at 3 MiB, +640 MB at 24 MiB there)
CPU_BATCH_BYTES = 8 * 2**20


@dataclass(eq=False)
class _Cell:
    """One grid cell: where it starts, its input at token t there, and the site it writes at t later."""

    key: str
    layer: int
    start: int  # first layer whose block runs over positions t..T-1 (n_layers: none)
    x0: torch.Tensor = field(repr=False)  # [1 or S, d]: input of layer `start` at token t
    site: str | None = None  # site written at token t in `edit_layers`
    clean: bool = True  # the written value: the clean run's (restore) or the corrupted run's (freeze)
    edit_layers: range = range(0)
    parent: _Cell | None = field(default=None, repr=False)  # a cell computed identically up to layer `join` - 1
    join: int = -1  # the layer at which the cell enters the batch (its start, or where it forks off parent)

    def __post_init__(self) -> None:
        if self.join < 0:
            self.join = self.start


class _Runs:
    """The clean (batch 1) and corrupted (batch S) runs with every block's outputs."""

    def __init__(self, stack: LlamaStack, problem: TraceProblem) -> None:
        device = next(stack.model.parameters()).device
        ids = problem.ids.to(device)[None]
        embeds = stack.embed(ids)
        _, self.clean = stack.run(embeds, keep=True)
        corrupted = corrupt_embeddings(
            embeds.repeat(problem.samples, 1, 1), problem.noise, problem.span, problem.replace
        )
        _, self.corr = stack.run(corrupted, keep=True)
        # resid_pre[j] = input of block j in the corrupted run; resid_pre[n_layers] = last block's output
        self.resid_pre = [corrupted] + [o.hidden for o in self.corr]
        self._attn_x0: dict[int, torch.Tensor] = {}

    def site(self, clean: bool, layer: int, site: str, t: int) -> torch.Tensor:
        """A site's value at token t, layer `layer`: [1, d] clean or [S, d] corrupted."""
        return (self.clean if clean else self.corr)[layer].site(site)[:, t]

    def attn_x0(self, stack: LlamaStack, layer: int) -> torch.Tensor:
        """Block `layer`'s output [S, T, d] with the clean attention output at every token (one at a time)."""
        if layer not in self._attn_x0:
            mid = self.resid_pre[layer] + self.clean[layer].attn_out
            self._attn_x0[layer] = mid + _mlp(stack, layer, mid)
        return self._attn_x0[layer]


def _mlp(stack: LlamaStack, layer: int, mid: torch.Tensor) -> torch.Tensor:
    """MLP output of block `layer` for residual `mid` (same modules and operations as `LlamaStack.block`)."""
    blk = stack.layers[layer]
    y = blk.post_attention_layernorm(mid)
    mlp = blk.mlp
    return mlp.down_proj(mlp.act_fn(mlp.gate_proj(y)) * mlp.up_proj(y))


def _windowed_cell(stack: LlamaStack, runs: _Runs, problem: TraceProblem, kind: str, t: int, layer: int) -> _Cell:
    """An mlp or attn cell: block a (the window's first layer) is done at token t alone, the rest written."""
    window = window_range(layer, problem.window, stack.n_layers)
    a = window[0]
    if kind == "mlp":
        x0 = runs.resid_pre[a][:, t] + runs.corr[a].attn_out[:, t] + runs.clean[a].mlp_out[:, t]
    else:
        x0 = runs.attn_x0(stack, a)[:, t]
    return _Cell(kind, layer, a + 1, x0, kind, True, window[1:])


def _fork(cells: list[_Cell]) -> None:
    """Link each cell of one windowed kind (in layer order) to the one before it when both start at the same
    layer (so have the same x0): they write the same values up to the shorter window's end, where it forks."""
    for prev, cell in zip(cells, cells[1:], strict=False):
        if prev.start == cell.start and prev.edit_layers.stop > cell.start:
            cell.parent, cell.join = prev, prev.edit_layers.stop


def _cells_at(stack: LlamaStack, runs: _Runs, problem: TraceProblem, t: int) -> list[_Cell]:
    """Every cell of token t (t at or after the subject's first token) whose score needs computing.

    A cell that starts after the last layer at a token before the last leaves the last position as in the
    corrupted run: its score is the corrupted score, so it is left out (its grid entry already holds it).
    """
    n_layers = stack.n_layers
    cells: list[_Cell] = []
    for kind in problem.kinds:
        if kind == "hidden":
            cells += [_Cell(kind, j, j + 1, runs.clean[j].hidden[:, t]) for j in range(n_layers)]
            continue
        windowed = [_windowed_cell(stack, runs, problem, kind, t, j) for j in range(n_layers)]
        _fork(windowed)
        cells += windowed
    for site in problem.severed:
        for j in range(n_layers):
            x0 = runs.clean[j].hidden[:, t]
            cells.append(_Cell(severed_key(site), j, j + 1, x0, site, False, range(j + 1, n_layers)))
    return [c for c in cells if c.start < n_layers or t == problem.n_tokens - 1]


def _edits(runs: _Runs, cells: list[_Cell], layer: int, t: int, samples: int) -> dict[str, Edit]:
    """LlamaStack edits of one layer: the rows of each cell with an edit there get its value at token t.

    Rows are cell-major (cell i owns rows i*S..i*S+S-1); the block's tensors hold positions t.. (t is 0).
    """
    groups: dict[tuple[str, bool], list[int]] = {}
    for index, cell in enumerate(cells):
        if cell.site is not None and layer in cell.edit_layers:
            groups.setdefault((cell.site, cell.clean), []).append(index)
    writes: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for (site, clean), indices in groups.items():
        value = runs.site(clean, layer, site, t)
        writes.setdefault(site, []).append((torch.tensor(indices, device=value.device), value))
    return {site: _writer(parts, samples) for site, parts in writes.items()}


def _writer(parts: list[tuple[torch.Tensor, torch.Tensor]], samples: int) -> Edit:
    """An edit writing value [1|S, d] at position 0 of the rows of the cells `index` (in place)."""

    def edit(x: torch.Tensor) -> torch.Tensor:
        by_cell = x.view(-1, samples, *x.shape[1:])
        for index, value in parts:
            by_cell[index, :, 0] = value
        return x

    return edit


def _joining(runs: _Runs, hidden: torch.Tensor | None, slot: dict[int, int], cells: list[_Cell], t: int,
             samples: int, layer: int) -> torch.Tensor:
    """Input rows [len(cells) * S, positions, d] at `layer` of cells joining there: a copy of the parent's
    rows, or the corrupted run's with x0 at token t (at the last layer's output: the last position only)."""
    parts: dict[int, torch.Tensor] = {}
    for cell in cells:
        if cell.parent is not None:
            at = slot.get(id(cell.parent))
            parts[id(cell)] = parts[id(cell.parent)] if at is None else hidden[at * samples : (at + 1) * samples]
            continue
        rows = runs.resid_pre[layer][:, t:].clone()
        rows[:, 0] = cell.x0
        parts[id(cell)] = rows if hidden is None or hidden.shape[1] == rows.shape[1] else rows[:, -1:]
    return torch.cat(list(parts.values()))


def _run_chunk(stack: LlamaStack, runs: _Runs, cells: list[_Cell], t: int,
               samples: int) -> tuple[list[_Cell], torch.Tensor]:
    """Run `cells`: (the cells in batch order, their final hidden states at the last position [cells * S, d])."""
    n_layers = stack.n_layers
    positions = runs.resid_pre[0].shape[1] - t
    pending = sorted(cells, key=lambda c: c.join)  # stable: a parent stays before its children
    order: list[_Cell] = []
    slot: dict[int, int] = {}
    hidden: torch.Tensor | None = None
    for layer in range(pending[0].join, n_layers + 1):
        joining = [c for c in pending[len(order) :] if c.join == layer]
        if joining:
            new = _joining(runs, hidden, slot, joining, t, samples, layer)
            hidden = new if hidden is None else torch.cat([hidden, new])
            slot.update((id(c), len(order) + i) for i, c in enumerate(joining))
            order += joining
        if layer == n_layers:
            break
        kv = runs.corr[layer].kv
        past = KV(kv.k[:, :, :t], kv.v[:, :, :t]) if t > 0 else None  # tiled over the cells by the block
        if layer == n_layers - 1 and positions > 1:  # edits at token t < last cannot reach the logits here
            hidden = stack.block(layer, hidden, t, past, last_only=True).hidden
        else:
            hidden = stack.block(layer, hidden, t, past, _edits(runs, order, layer, t, samples)).hidden
    return order, hidden[:, -1]


def _answer_probs(stack: LlamaStack, final: torch.Tensor, answer_id: int) -> torch.Tensor:
    """p(answer) for final hidden states [rows, d], in row blocks: softmax's arithmetic (exp(z - max) / sum, in
    float32) for the answer's column only, in place in the logits (exp(z - logsumexp) would lose digits)."""
    probs = []
    for lo in range(0, final.shape[0], UNEMBED_ROWS):
        logits = stack.unembed(final[lo : lo + UNEMBED_ROWS]).float()
        weights = logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()
        probs.append(weights[:, answer_id] / weights.sum(dim=-1))
    return torch.cat(probs)


def _batch_tokens(stack: LlamaStack, max_tokens: int) -> int:
    """Rows x positions per batch: max_tokens, and on the CPU at most CPU_BATCH_BYTES per MLP activation."""
    weight = stack.layers[0].mlp.gate_proj.weight
    if weight.device.type != "cpu":
        return max_tokens
    return min(max_tokens, CPU_BATCH_BYTES // (weight.shape[0] * weight.element_size()))


def _chunks(cells: list[_Cell], rows_per_cell: int, tokens: int) -> list[list[_Cell]]:
    """Cells sorted by start in batches of at most `tokens` rows x positions; a cell whose parent is in
    another batch starts on its own."""
    ordered = sorted(cells, key=lambda c: c.start)
    per_chunk = max(1, tokens // rows_per_cell)
    chunks = [ordered[lo : lo + per_chunk] for lo in range(0, len(ordered), per_chunk)]
    for chunk in chunks:
        members = {id(c) for c in chunk}
        for cell in chunk:
            if cell.parent is not None and id(cell.parent) not in members:
                cell.parent, cell.join = None, cell.start
    return chunks


@torch.no_grad()
def fast_grids(stack: LlamaStack, problem: TraceProblem, max_tokens: int = 16384) -> Grids:
    """All grids of `problem` with the exact fast engine (see the module docstring).

    `stack`: a block runner for the model (`model.stack.guarded_stack(model)` checks it is valid).
    max_tokens bounds rows x positions per batch (memory); results do not depend on it.
    """
    runs = _Runs(stack, problem)
    tokens = _batch_tokens(stack, max_tokens)
    samples, n_tokens, n_layers = problem.samples, problem.n_tokens, stack.n_layers
    clean = float(_answer_probs(stack, runs.clean[-1].hidden[:, -1], problem.answer_id)[0])
    corrupted = float(_answer_probs(stack, runs.corr[-1].hidden[:, -1], problem.answer_id).mean())
    grids = {key: problem.empty_grid(n_layers, corrupted) for key in problem.grid_keys()}
    finals: list[torch.Tensor] = []
    owners: list[tuple[str, int, int]] = []  # (grid, token, layer) of each cell's S rows in `finals`
    for t in (t for t in problem.computed_rows() if t >= problem.span[0]):
        for chunk in _chunks(_cells_at(stack, runs, problem, t), samples * (n_tokens - t), tokens):
            order, final = _run_chunk(stack, runs, chunk, t, samples)
            finals.append(final)
            owners += [(cell.key, t, cell.layer) for cell in order]
    if owners:  # every cell's logits at the end, in large blocks (the LM head is read once per block)
        probs = _answer_probs(stack, torch.cat(finals), problem.answer_id).view(len(owners), samples).mean(1)
        for (key, t, layer), p in zip(owners, probs.tolist(), strict=True):
            grids[key][t, layer] = p
    return Grids(clean, corrupted, grids)


def work_units(
    n_tokens: int,
    subject_start: int,
    n_layers: int,
    samples: int,
    kinds: tuple[str, ...],
    window: int,
    severed: tuple[str, ...] = (),
    kv_fraction: float = 0.125,
    vocab_units: float = 0.0,
    rows: Sequence[int] | None = None,
) -> dict[str, float]:
    """Operation counts in block-position-row units (one block at one position for one batch row).

    oracle: one forward of batch 1+S over all tokens and layers per cell, logits at every position (as the
    bridge computes them). per_cell: batch S (clean cached). bound: the least work under exact skipping as
    stated in the issue (cells before the subject skipped; positions < t skipped; hidden cells start at layer
    l+1, windowed cells at the window's first layer; logits at the last position). engine: what this engine
    computes (bound's rules, plus the first changed layer reduced to token t, the last layer to the last
    position, whose other positions cost `kv_fraction` of a block (their key and value projections), cells
    equal to the corrupted run skipped and windows sharing their start forked), its clean and corrupted runs
    included. vocab_units: the cost of one position's logits (final norm + LM head) in blocks, d x vocab
    over a block's multiply-adds (0: not counted). rows: the token rows computed (None: all).
    """
    rows = list(range(n_tokens)) if rows is None else sorted(set(rows))
    kinds_all = list(kinds) + ["hidden"] * len(severed)  # severed cells are hidden cells
    per_forward = n_tokens * (n_layers + vocab_units)
    cells = len(rows) * n_layers * len(kinds_all)
    bound = engine = 0.0
    for t in (t for t in rows if t >= subject_start):
        positions = n_tokens - t
        for kind in kinds_all:
            for first, join in _cell_layers(kind, n_layers, window):
                bound += samples * (positions * (n_layers - first) + vocab_units)
                if join >= n_layers and positions > 1:  # the corrupted run's score: nothing computed
                    continue
                engine += samples * (positions * max(0, n_layers - join) + vocab_units)
                if join < n_layers and positions > 1:  # last layer: keys/values only, but for the last
                    engine -= samples * (positions - 1) * (1 - kv_fraction)
    if "attn" in kinds:  # one MLP per distinct window start over every token (about 2/3 of a block)
        starts = {window_range(layer, window, n_layers)[0] for layer in range(n_layers)}
        engine += samples * len(starts) * n_tokens * 2 / 3
    engine += (1 + samples) * per_forward
    oracle = cells * (1 + samples) * per_forward
    per_cell = cells * samples * per_forward
    return {
        "oracle": oracle,
        "per_cell": per_cell,
        "bound": bound,
        "engine": engine,
        "bound_speedup": oracle / bound,
        "engine_speedup": oracle / engine,
    }


def _cell_layers(kind: str, n_layers: int, window: int) -> list[tuple[int, int]]:
    """(first changed layer, layer the engine's batch starts at) of every cell of one kind at one token."""
    if kind == "hidden":
        return [(layer + 1, layer + 1) for layer in range(n_layers)]
    out = []
    prev: range | None = None
    for layer in range(n_layers):
        span = window_range(layer, window, n_layers)
        join = span.start + 1
        if prev is not None and prev.start == span.start and prev.stop > join:  # forked, see `_fork`
            join = prev.stop
        out.append((span.start, join))
        prev = span
    return out
