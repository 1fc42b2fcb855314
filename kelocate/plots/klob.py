"""Draw the KLoB RSim curves (consistency, relevance, unbiasedness over top-k layers), as in Figure 8."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kelocate.atomic import atomic_path

STYLES = {"consistency": ("tab:blue", "-", "o"), "relevance": ("tab:orange", "-", "s"),
          "unbiasedness": ("tab:green", "--", "^")}


def draw_klob_curves(result: dict[str, Any], path: str | os.PathLike,
                     formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Plot RSim vs k for a `run_klob_study` result; writes PATH.png / PATH.pdf and returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ks = result["k"]
    for name, (color, line, marker) in STYLES.items():
        values = result.get(name)
        if values:
            ax.plot(ks, values, line, color=color, marker=marker, label=name)
    title = result["locator"] + (f" ({result['kind']})" if result.get("kind") else "")
    n = result["n"]
    ax.set_title(f"KLoB RSim: {title}, {result['model']}\n{n['facts']} facts, {n['chains']} chains, "
                 f"{n['random']} random sentences", fontsize=9)
    ax.set_xlabel(f"k (top-k layers, {result['similarity']} overlap)")
    ax.set_ylabel("RSim")
    ax.set_xticks(ks)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    stem = Path(path)
    written = []
    for fmt in formats:
        dest = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
        written.append(dest)
    plt.close(fig)
    return written
