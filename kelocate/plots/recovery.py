"""The recovery study's figure (the comprehensive study's Figure 10, measured): the two worlds side by side.

Left, the knowledge graph: its distance from the original after every edit o -> o' and every edit back o' -> o
(back to 0 at every round). Right, the model, per editor and mode: the relative weight distance from the original
(mean over the layers it wrote), the recall of every other known fact (solid) and of the edited facts' original
answers (dashed), and the mean KL of next-token distributions on unrelated prompts, against the round trips done
(round 0 is the unedited model). The data is `RecoveryResult.to_json()` (`kelocate.studies.recovery`) as a plain
dict; this module only draws, in the one style of `plots/style.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator

from kelocate.errors import KelocateError
from kelocate.plots.style import GRID_ALPHA, NOTE, SERIES, SMALL, TITLE, new_figure, save_figure


def _world_panel(ax, world: Sequence[Mapping[str, Any]]) -> None:
    """Graph distance from the original after each half round (edits at k - 0.5, edits back at k)."""
    xs, ys = [0.0], [0]
    for trip in world:
        xs += [trip["round"] - 0.5, trip["round"]]
        ys += [trip["forward_distance"], trip["distance"]]
    ax.plot(xs, ys, color="black", marker="o", drawstyle="default")
    backs = [t["distance"] for t in world]
    ax.set_title("knowledge graph: distance from the original\n"
                 f"(edits at k-0.5, edits back at k: {'all 0' if not any(backs) else backs})", fontsize=TITLE)
    ax.set_xlabel("round trips")
    ax.set_ylabel("nodes + edges that differ")


def _series(run: Mapping[str, Any], key: str, start: float) -> tuple[list[int], list[float]]:
    xs, ys = [0], [start]
    for row in run["rounds"]:
        xs.append(row["round"])
        ys.append(float(row[key]))
    return xs, ys


def draw_recovery(result: Mapping[str, Any], stem: str | Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write the figure as STEM.<fmt> for every format; returns the paths."""
    if not isinstance(result, Mapping) or "runs" not in result or "world" not in result:
        raise KelocateError("not a recovery result; pass RecoveryResult.to_json() or the study's recovery.json")
    base = result.get("baseline", {})
    fig = new_figure(17, 4.0)
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1.1, 1, 1, 1]})
    _world_panel(axes[0], result["world"])
    for i, run in enumerate(result["runs"]):
        if not run["rounds"]:
            continue
        color = SERIES[i % len(SERIES)]
        label = run.get("label", f"{run['method']} ({run['mode']})")
        style = ":" if run["mode"] == "revert" else "-"
        axes[1].plot(*_series(run, "distance_mean", 0.0), marker="o", color=color, linestyle=style, label=label)
        axes[2].plot(*_series(run, "other_recall", base.get("other_recall", float("nan"))), marker="o",
                     color=color, linestyle=style, label=label)
        axes[2].plot(*_series(run, "edited_recall", base.get("edited_recall", float("nan"))), marker="x",
                     color=color, linestyle="--", alpha=0.7)
        axes[3].plot(*_series(run, "kl", 0.0), marker="o", color=color, linestyle=style, label=label)
    axes[1].set_title("model: relative weight distance\n||W_k - W_0|| / ||W_0|| (mean over written layers)",
                      fontsize=TITLE)
    axes[2].set_title("model: recall of all other known facts (solid)\nand of the edited facts' original answers "
                      "(dashed)", fontsize=TITLE)
    low = min([line.get_ydata().min() for line in axes[2].get_lines()] or [0.0])
    axes[2].set_ylim(max(-0.02, min(0.9, float(low)) - 0.05), 1.02)  # drift near 1 stays visible
    axes[3].set_title("model: KL(original || edited)\nnext token, unrelated prompts", fontsize=TITLE)
    axes[3].set_yscale("symlog", linthresh=1e-4)
    for ax in axes:
        ax.set_xlabel("round trips (o -> o' -> o)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=GRID_ALPHA)
    axes[0].set_xlabel("round trips")
    axes[1].legend(fontsize=SMALL)
    facts = len(result.get("facts", []))
    fig.suptitle(f"Editing {facts} facts o -> o' and back o' -> o: the knowledge graph (left) and the model "
                 f"{result.get('model', '')} (right)", fontsize=NOTE)
    fig.tight_layout()
    return save_figure(fig, stem, formats)
