"""The KnowEdit study's curves: edit success and locality against the number of sequential edits, one
figure per task (the comprehensive study's Figure 4), in the one style of `plots/style.py`.

The curves come computed (`kelocate.studies.knowedit.report.curves`: task -> method -> edits -> mean of
each column over the sequential units); this module only draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kelocate.plots.style import SMALL, TITLE, new_figure, save_figure

Curves = Mapping[str, Mapping[str, Mapping[int, Mapping[str, float]]]]
PANELS = (("edit_tf", "edit success (teacher-forced)"), ("locality_tf", "locality"))


def draw_curves(curves: Curves, out: str | Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """One figure per task, OUT/sequential_<task>.<fmt>: edit success and locality against the number of
    edits applied (log scale), one line per method; returns the written files."""
    written = []
    for task, methods in curves.items():
        fig = new_figure(9, 3.5)
        axes = fig.subplots(1, 2)
        for method, points in methods.items():
            edits = list(points)
            for ax, (column, _) in zip(axes, PANELS, strict=True):
                ax.plot(edits, [points[k].get(column, float("nan")) for k in edits], marker="o", label=method)
        for ax, (_, title) in zip(axes, PANELS, strict=True):
            ax.set_xscale("log")
            ax.set_xlabel("edits applied")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{task}: {title}", fontsize=TITLE)
        axes[1].legend(fontsize=SMALL)
        fig.tight_layout()
        written += save_figure(fig, Path(out) / f"sequential_{task}", formats)
    return written
