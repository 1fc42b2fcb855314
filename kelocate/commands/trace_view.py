"""Terminal rendering of causal traces (rich): scores, located layers and compact coloured grids."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.columns import Columns
from rich.console import Group
from rich.table import Table
from rich.text import Text

RAMPS = {"hidden": (84, 39, 143), "mlp": (0, 109, 44), "attn": (165, 15, 21)}
PAPER = (247, 247, 247)


def _colour(kind: str, level: float) -> str:
    dark = RAMPS["hidden" if kind.startswith("hidden") else kind]
    r, g, b = (round(p + (d - p) * level) for p, d in zip(PAPER, dark, strict=True))
    return f"rgb({r},{g},{b})"


def _short(token: str, width: int = 12) -> str:
    text = token if token.strip() else repr(token)
    return text if len(text) <= width else text[: width - 1] + "…"


def grid_text(result, kind: str) -> Text:
    """One grid as coloured blocks: a row per token (subject tokens marked '*'), a column per layer."""
    grid = result.grid(kind)
    low = result.corrupted_score
    high = max(float(grid.max()), low + 1e-9)
    start, end = result.subject_span
    text = Text()
    text.append(f"{kind}\n", style="bold")
    best = result.top_layers(kind, 1)[0]
    for i, token in enumerate(result.tokens):
        mark = "*" if start <= i < end else " "
        text.append(f"{_short(token):>12}{mark}")
        for layer in range(grid.shape[1]):
            level = float(np.clip((grid[i, layer] - low) / (high - low), 0.0, 1.0))
            cell = "▲▲" if (i == end - 1 and layer == best) else "  "
            text.append(cell, style=f"{'white' if level > 0.5 else 'black'} on {_colour(kind, level)}")
        text.append("\n")
    layers = "".join(f"{j:<2d}" if j < 100 else "··" for j in range(grid.shape[1]))
    text.append(" " * 13 + layers + "\n", style="dim")
    text.append(" " * 13 + f"{low:.3f} → {high:.3f}", style="dim")
    return text


def trace_panel(result, written: list[str] | None = None) -> Group:
    """Everything `kelocate trace` prints for one prompt."""
    cfg = result.config
    start, end = result.subject_span
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("prompt", repr(result.prompt))
    head.add_row("subject", f"{result.subject!r} = tokens {start}..{end - 1} ({cfg.get('subject_source')})")
    how = "given" if cfg.get("answer_given") is not None else "clean top token"
    head.add_row("answer", f"{result.answer!r} ({how})")
    head.add_row(
        "scores",
        f"clean p = {result.clean_score:.4f}   corrupted p = {result.corrupted_score:.4f}   "
        f"(drop {result.clean_score - result.corrupted_score:+.4f})",
    )
    sigma = f", sigma {cfg['sigma']:.4g}" if cfg.get("sigma") else ""
    head.add_row(
        "setup",
        f"{cfg.get('model')} ({cfg.get('n_layers')} layers), {cfg.get('samples')} samples, "
        f"noise {cfg.get('noise')}{' replace' if cfg.get('replace') else ''} = "
        f"{cfg.get('noise_scale'):.4g}{sigma}, window {cfg.get('window')}, "
        f"engine {cfg.get('engine')}",
    )
    located = Table(
        title="located layers at the last subject token " + repr(result.tokens[end - 1]),
        title_justify="left",
        show_edge=False,
    )
    located.add_column("kind")
    located.add_column("top layers", justify="right")
    located.add_column("restored p", justify="right")
    located.add_column("indirect effect", justify="right")
    located.add_column("strongest subject cell: token, layer, effect", justify="right")
    for kind in result.kinds:
        top = result.top_layers(kind, 3)
        row = result.grid(kind)[end - 1]
        token, layer, prob = result.peak(kind)
        located.add_row(
            kind,
            ", ".join(map(str, top)),
            f"{row[top[0]]:.4f}",
            f"{row[top[0]] - result.corrupted_score:+.4f}",
            f"{result.tokens[token]!r} ({token}), {layer}, {prob - result.corrupted_score:+.4f}",
        )
    parts: list[Any] = [
        head,
        Text(""),
        located,
        Text(""),
        Columns([grid_text(result, k) for k in result.kinds], padding=(0, 3)),
    ]
    for note in result.notes:
        parts.append(Text(f"note: {note}", style="yellow"))
    if written:
        parts.append(Text("wrote " + ", ".join(written), style="dim"))
    return Group(*parts)


def average_table(average: dict[str, Any]) -> Table:
    """Peak average indirect effect per kind and token group."""
    table = Table(
        title=f"average indirect effect over {average['n_facts']} facts ({average['source']})",
        title_justify="left",
    )
    table.add_column("group")
    for kind in average["kinds"]:
        table.add_column(f"{kind}: peak layer (AIE)", justify="right")
    for group in average["groups"]:
        cells = []
        for kind in average["kinds"]:
            mean = average["effects"][kind][group]["mean"]
            if mean is None:
                cells.append("-")
                continue
            values = np.array([np.nan if v is None else v for v in mean], dtype=float)
            j = int(np.nanargmax(values))
            cells.append(f"{j} ({values[j]:+.4f})")
        table.add_row(group, *cells)
    return table


def clearest_text(average: dict[str, Any], group: str = "last subject token", n: int = 3) -> Text:
    """The facts whose effect at `group` is clearest, per kind: where an average may hide a strong site."""
    text = Text(f"clearest facts at the {group}:", style="bold")
    for kind in average["kinds"]:
        for row in average["clearest"][kind][group][:n]:
            tokens = "".join(row["tokens"])
            text.append(
                f"\n  {kind:<6} {row['effect']:+.2f} at layer {row['layer']}  {row['prompt']!r} "
                f"(token {tokens!r}, answer {row['answer']!r})"
            )
    return text
