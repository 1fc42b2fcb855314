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


def kind_label(kind: str, window: int | None) -> str:
    """A kind's full name for tables: 'mlp (window 10)', 'mlp (single layer)', 'hidden, mlp severed'."""
    if kind.endswith("_single"):
        return f"{kind.removesuffix('_single')} (single layer)"
    if kind.startswith("hidden_severed_"):
        return f"hidden, {kind.removeprefix('hidden_severed_')} severed"
    if kind in ("mlp", "attn") and window and window > 1:
        return f"{kind} (window {window})"
    return kind


def _cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    return f"{', '.join(map(str, entry['layers']))} ({entry['effect']:+.3f})"


def located_table(result) -> Table:
    """Top layers and the indirect effect of the best one, per kind, at three tokens: the last subject
    token, the subject token with the strongest effect, and the last token."""
    located = result.located(3)
    end = result.subject_span[1]
    table = Table(title="located layers: top 3 (indirect effect of the first) at the last subject token, the "
                        "subject token with the strongest effect, and the last token", title_justify="left",
                  show_edge=False)
    table.add_column("kind", no_wrap=True)
    table.add_column(f"last subject {result.tokens[end - 1]!r}", justify="right")
    table.add_column("strongest", justify="right")
    table.add_column(f"last {result.tokens[-1]!r}", justify="right")
    window = result.config.get("window")
    for kind, where in located.items():
        strongest = where.get("strongest_subject")
        label = f"{strongest['label']!r} {_cell(strongest)}" if strongest else "-"
        table.add_row(kind_label(kind, window), _cell(where.get("last_subject")), label, _cell(where.get("last")))
    return table


def _not_located(result) -> Text:
    """What an invalid trace prints instead of located layers: why it locates nothing."""
    text = Text("not located: ", style="bold red")
    text.append("; ".join(result.problems), style="red")
    return text


def grid_text(result, kind: str) -> Text:
    """One grid as coloured blocks: a row per token (subject tokens marked '*'), a column per layer."""
    grid = result.grid(kind)
    low = result.corrupted_score
    high = max(float(grid.max()), low + 1e-9)
    start, end = result.subject_span
    text = Text()
    text.append(f"{kind}\n", style="bold")
    best = result.top_layers(kind, 1, window="windowed")[0]
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
    located = located_table(result) if result.valid else _not_located(result)
    parts: list[Any] = [
        head,
        Text(""),
        located,
        Text(""),
        Columns([grid_text(result, k) for k in result.base_kinds], padding=(0, 3)),
    ]
    for note in result.notes:
        parts.append(Text(f"note: {note}", style="yellow"))
    if written:
        parts.append(Text("wrote " + ", ".join(written), style="dim"))
    return Group(*parts)


def average_table(average: dict[str, Any]) -> Table:
    """Peak average indirect effect per kind and token group."""
    table = Table(
        title=f"average indirect effect over {average['n_facts']} facts ({average['source']}): peak layer (AIE)",
        title_justify="left",
    )
    table.add_column("group", no_wrap=True)
    for kind in average["kinds"]:
        table.add_column(kind_label(kind, average.get("window")), justify="right")
    from kelocate.locate.causal_trace.average import peak_layers

    for group, per in peak_layers(average).items():
        table.add_row(group, *("-" if p is None else f"{p[0]} ({p[1]:+.4f})" for p in per.values()))
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


def skipped_text(average: dict[str, Any], show: int = 5) -> Text:
    """How many facts were skipped and why, with the first few records (all of them are in the JSON)."""
    counts = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in average["skipped"].items() if v)
    if not counts:
        return Text("no fact skipped", style="dim")
    text = Text(f"skipped {counts} (all listed in the JSON under skipped_records)", style="yellow")
    for record in average["skipped_records"][:show]:
        text.append(f"\n  {record['source']}: {record['reason']}", style="yellow")
    return text
