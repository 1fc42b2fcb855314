"""Causal-trace figures: the heatmap of one trace (ROME's Figure 1) and the averaged indirect effects over
a data set (ROME's Figure 2), in the one style of `plots/style.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from kelocate.plots.style import BAND_ALPHA, SERIES, SITE_CMAPS, SITE_NAMES, SMALL, TITLE, new_figure, save_figure


def token_labels(tokens: Sequence[str], span: tuple[int, int]) -> list[str]:
    """Readable tick labels of a trace's tokens, the subject's marked '*' (matplotlib's '$' escaped, blanks
    shown by repr)."""
    start, end = span
    return [(t.replace("$", r"\$") if t.strip() else repr(t)) + ("*" if start <= i < end else "")
            for i, t in enumerate(tokens)]


def base_kind(kind: str) -> str:
    """The site a grid's colour map belongs to: 'hidden' (severed ones too), 'mlp' or 'attn'."""
    return "hidden" if kind.startswith("hidden") else kind.removesuffix("_single")


def layer_ticks(ax, n_layers: int, width_inches: float) -> None:
    """Layer tick labels that never overlap: every 1, 2, 5, 10, ... layers, at most ~3 labels per inch."""
    room = max(2, int(width_inches * 3))
    step = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500) if n_layers / s <= room)
    ax.set_xticks(np.arange(0, n_layers, step) + 0.5, [str(i) for i in range(0, n_layers, step)])


def trace_heatmap(result, kind: str) -> Figure:
    """ROME-style heatmap of one grid: tokens (subject marked '*') x layers, floor at the corrupted score."""
    grid = result.grid(kind)
    base = base_kind(kind)
    labels = token_labels(result.tokens, result.subject_span)
    n_tokens, n_layers = grid.shape
    fig = new_figure(max(3.5, 0.28 * n_layers + 2.0), max(2.0, 0.3 * n_tokens + 0.9))
    ax = fig.add_subplot()
    vmax = max(float(grid.max()), result.corrupted_score + 1e-9)
    mesh = ax.pcolormesh(grid, cmap=SITE_CMAPS[base], vmin=result.corrupted_score, vmax=vmax)
    ax.invert_yaxis()
    ax.set_yticks(np.arange(n_tokens) + 0.5, labels)
    layer_ticks(ax, n_layers, 0.28 * n_layers)
    window = 1 if kind.endswith("_single") else result.config.get("window")
    model = Path(str(result.config.get("model", "the model"))).name
    if base == "hidden" and kind != "hidden":
        site = kind.removeprefix("hidden_severed_")
        ax.set_title(f"Restoring states with {SITE_NAMES[site]} severed", fontsize=TITLE)
        ax.set_xlabel(f"single restored layer within {model}")
    elif base == "hidden":
        ax.set_title("Impact of restoring state after corrupted input", fontsize=TITLE)
        ax.set_xlabel(f"single restored layer within {model}")
    else:
        ax.set_title(f"Impact of restoring {SITE_NAMES[base]} after corrupted input", fontsize=TITLE)
        ax.set_xlabel(
            f"single restored {SITE_NAMES[base]} layer"
            if window == 1
            else f"center of interval of {window} restored {SITE_NAMES[base]} layers"
        )
    bar = fig.colorbar(mesh, ax=ax)
    bar.set_label(f"p({result.answer.strip() or repr(result.answer)})")
    return fig


def save_trace_figures(
    result,
    out_dir: str | Path,
    name: str,
    formats: Sequence[str] = ("png",),
    kinds: Sequence[str] | None = None,
) -> list[Path]:
    """Heatmaps of `kinds` (default: every traced kind, without the single-layer companions) as
    OUT_DIR/NAME_<kind>.<fmt>; returns the written paths."""
    paths: list[Path] = []
    for kind in kinds or result.base_kinds:
        paths += save_figure(trace_heatmap(result, kind), Path(out_dir) / f"{name}_{kind}", formats)
    return paths


def _values(values: list[float | None] | None, n: int) -> np.ndarray:
    """A JSON list with None for undefined values (or None for an empty group) as a float array with NaN."""
    if values is None:
        return np.full(n, np.nan)
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def average_figure(average: dict[str, Any]) -> Figure:
    """ROME's averaged figure: per kind, the average indirect effect per token group x layer (heatmap),
    and the last-subject-token and last-token curves with their confidence intervals."""
    kinds = list(average["kinds"])
    groups = list(average["groups"])
    fig = new_figure(4.2 * len(kinds), 6.0)
    axes = fig.subplots(2, len(kinds), squeeze=False)
    for col, kind in enumerate(kinds):
        data = average["effects"][kind]
        mean = np.array([_values(data[g]["mean"], average["n_layers"]) for g in groups], dtype=float)
        ax = axes[0][col]
        mesh = ax.pcolormesh(
            np.nan_to_num(mean, nan=0.0),
            cmap=SITE_CMAPS[base_kind(kind)],
            vmin=0.0,
            vmax=max(1e-9, float(np.nanmax(mean)) if np.isfinite(mean).any() else 1e-9),
        )
        ax.invert_yaxis()
        layer_ticks(ax, mean.shape[1], 2.8)
        ax.set_yticks(np.arange(len(groups)) + 0.5, [f"{g} (n={data[g]['n']})" for g in groups], fontsize=SMALL)
        single = kind.endswith("_single") or average.get("window") == 1
        what = "state" if kind == "hidden" else SITE_NAMES[base_kind(kind)] + (" (single layer)" if single else "")
        ax.set_title(f"Average indirect effect of {what}", fontsize=TITLE)
        ax.set_xlabel("layer" if kind == "hidden" or single else f"center of {average['window']}-layer window")
        fig.colorbar(mesh, ax=ax).set_label("AIE")
        line = axes[1][col]
        for group, colour in (("last subject token", SERIES[0]), ("last token", SERIES[1])):
            g = data.get(group)
            if not g or not g["n"]:
                continue
            m, lo, hi = (_values(g[key], average["n_layers"]) for key in ("mean", "ci_low", "ci_high"))
            x = np.arange(len(m))
            line.plot(x, m, color=colour, label=group)
            line.fill_between(x, lo, hi, color=colour, alpha=BAND_ALPHA)
        line.axhline(0.0, color="grey", lw=0.5)
        line.set_xlabel("layer")
        line.set_ylabel("AIE")
        line.legend(fontsize=SMALL)
    fig.suptitle(
        f"{average['model']}: {average['n_facts']} facts ({average['source']}), "
        f"{int(average['confidence'] * 100)}% CI",
        fontsize=TITLE,
    )
    fig.tight_layout()
    return fig
