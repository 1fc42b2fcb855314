"""The embedding-space projection bars (the comprehensive study's Figure 7 analog), in the one style of
`plots/style.py`: per method, Hit@k of the new target in the top dW columns before (W) and after (W'), beside
the same for random columns of the layer and the base rate, so that a "before" already high is seen as such.

Data in, figure out: `summaries` maps a method to `kelocate.probes.projection.summarise(...)` of its edits
(plain dicts: {"n", "top": {"before"|"after": {"any"|"mean": {"10": x, ...}}}, "random": ..., "base": ...}).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from kelocate.errors import KelocateError
from kelocate.plots.style import DPI, GRID_ALPHA, NOTE, SERIES, SMALL, TITLE, new_figure, save_figure

# bar -> (summary key, when, colour, hatch)
BARS = (("top dW columns, W", "top", "before", SERIES[0], ""), ("top dW columns, W'", "top", "after", SERIES[1], ""),
        ("random columns, W", "random", "before", SERIES[0], "//"),
        ("random columns, W'", "random", "after", SERIES[1], "//"))
BASE_HOW = {"any": "any_of", "mean": "rate"}  # the base rate that is the chance level of each reading


def projection_hits_figure(summaries: Mapping[str, Mapping[str, Any]], ks: Sequence[int] = (10, 50),
                           how: str = "any", title: str = "") -> Figure:
    """One panel per k: grouped bars per method (top and random columns, before and after), a black tick at
    the base rate after the edit (dotted: before). `how` = "any" (any of the columns) or "mean" (per column)."""
    if not summaries:
        raise KelocateError("no methods to draw; pass at least one method's projection summary")
    if how not in BASE_HOW:
        raise KelocateError(f"how must be 'any' or 'mean', got {how!r}")
    methods = list(summaries)
    fig = new_figure(2.2 + 1.6 * len(methods) * len(ks) / 2, 3.6)
    axes = fig.subplots(1, len(ks), sharey=True, squeeze=False)[0]
    width = 0.8 / len(BARS)
    for ax, k in zip(axes, ks, strict=True):
        key = str(k)
        for j, (label, which, when, colour, hatch) in enumerate(BARS):
            xs = [i + (j - (len(BARS) - 1) / 2) * width for i in range(len(methods))]
            values = [summaries[m][which][when][how][key] for m in methods]
            ax.bar(xs, values, width, color=colour, hatch=hatch, edgecolor="white" if not hatch else "black",
                   linewidth=0.5, alpha=1.0 if not hatch else 0.55, label=label)
        for i, m in enumerate(methods):
            base = summaries[m]["base"]
            ax.hlines(base["after"][BASE_HOW[how]][key], i - 0.45, i + 0.45, colors="black", linewidth=1.2,
                      label="base rate, W'" if i == 0 else None)
            ax.hlines(base["before"][BASE_HOW[how]][key], i - 0.45, i + 0.45, colors="black", linewidth=1.0,
                      linestyles="dotted", label="base rate, W" if i == 0 else None)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([f"{m}\n(n={summaries[m]['n']})" for m in methods], fontsize=SMALL)
        ax.set_title(f"Hit@{k}", fontsize=TITLE)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=GRID_ALPHA)
    axes[0].set_ylabel("any of the columns" if how == "any" else "mean over columns")
    axes[-1].legend(fontsize=SMALL, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if title:
        fig.suptitle(title, fontsize=NOTE)
    fig.tight_layout()
    return fig


def draw_projection_hits(summaries: Mapping[str, Mapping[str, Any]], path: str | os.PathLike,
                         ks: Sequence[int] = (10, 50), how: str = "any", title: str = "",
                         formats: tuple[str, ...] = ("png", "pdf"), dpi: int = DPI) -> list[Path]:
    """`projection_hits_figure` written as PATH.<fmt> for each format; returns the files."""
    return save_figure(projection_hits_figure(summaries, ks, how, title), path, formats, dpi)
