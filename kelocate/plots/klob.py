"""The KLoB RSim curves (consistency, relevance, unbiasedness over top-k layers), as in the comprehensive
study's Figure 8, in the one style of `plots/style.py`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kelocate.plots.style import DPI, GRID_ALPHA, NOTE, SERIES, SMALL, new_figure, save_figure

# curve -> (colour, line style, marker)
STYLES = {"consistency": (SERIES[0], "-", "o"), "relevance": (SERIES[1], "-", "s"),
          "unbiasedness": (SERIES[2], "--", "^")}


def draw_klob_curves(result: dict[str, Any], path: str | os.PathLike,
                     formats: tuple[str, ...] = ("png", "pdf"), dpi: int = DPI) -> list[Path]:
    """Plot RSim vs k for a `run_klob_study` result; writes PATH.png / PATH.pdf and returns the files."""
    fig = new_figure(5.2, 3.6)
    ax = fig.add_subplot()
    ks = result["k"]
    for name, (color, line, marker) in STYLES.items():
        values = result.get(name)
        if values:
            ax.plot(ks, values, line, color=color, marker=marker, label=name)
    title = result["locator"] + (f" ({result['kind']})" if result.get("kind") else "")
    n = result["n"]
    ax.set_title(f"KLoB RSim: {title}, {result['model']}\n{n['facts']} facts, {n['chains']} chains, "
                 f"{n['random']} random sentences", fontsize=NOTE)
    ax.set_xlabel(f"k (top-k layers, {result['similarity']} overlap)")
    ax.set_ylabel("RSim")
    ax.set_xticks(ks)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=GRID_ALPHA)
    ax.legend(fontsize=SMALL)
    fig.tight_layout()
    return save_figure(fig, path, formats, dpi)
