"""The SMAP-case figures (the comprehensive study's Figure 9), in the one style of `plots/style.py`:

- `draw_case_traces`: the three traces (fact, chain, unrelated fact) side by side, one row per traced kind, each
  row on ONE colour scale (from the lowest corrupted score to the highest restored probability of the row), so
  the three prompts' effects compare; the token row whose layers are ranked is outlined;
- `draw_case_overlap`: per kind, the similarity of the top-k layers of each pair over k, with the chance
  baseline (RSim's Sim_all) dotted.

They take a case result as plain data (`traces`: role -> trace result, `comparison`: the rankings' settings and
curves, `case`, `model`), never a model; the numbers come from `kelocate.studies.case`.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.patches import Rectangle

from kelocate.errors import KelocateError
from kelocate.plots.style import DPI, GRID_ALPHA, NOTE, SERIES, SITE_CMAPS, SMALL, TITLE, new_figure, save_figure
from kelocate.plots.trace import base_kind, layer_ticks, token_labels

ROLES = ("fact", "chain", "unrelated")
ROLE_TITLES = {"fact": "the fact", "chain": "a question that needs its chain", "unrelated": "an unrelated fact"}
PAIR_STYLES = {"fact~chain": (SERIES[1], "-", "s"), "fact~unrelated": (SERIES[0], "-", "o"),
               "chain~unrelated": (SERIES[7], "--", "^")}
PANEL_WIDTH = 4.2  # inches per heatmap
TOKEN_HEIGHT = 0.24  # inches per token row
VERDICT_SHORT = {"entity": "the entity", "fact": "the fact", "neither": "neither (chance level)"}
KIND_NAMES = {"hidden": "hidden state", "mlp": "MLP output", "attn": "attention output"}


def _wrap(text: str, width: int = 48) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _row_scale(traces: dict[str, Any], kind: str, window: str) -> tuple[float, float]:
    """One colour scale for a kind's row: the lowest corrupted score .. the highest restored probability."""
    low = min(float(t.corrupted_score) for t in traces.values())
    high = max(float(np.nanmax(t.window_grid(kind, window))) for t in traces.values())
    return low, max(high, low + 1e-9)


def draw_case_traces(result, path: str | os.PathLike, formats: Sequence[str] = ("png",), dpi: int = DPI) -> list[Path]:
    """The three traces side by side, one row per kind, each row on one colour scale; writes PATH.<fmt>."""
    comp, traces = result.comparison, result.traces
    missing = [r for r in ROLES if r not in traces]
    if missing or not comp.kinds:
        raise KelocateError(f"nothing to draw: the case lacks {', '.join(missing) or 'traced kinds'}")
    n_tokens = max(len(traces[r].tokens) for r in ROLES)
    n_layers = comp.n_layers
    height = max(1.6, TOKEN_HEIGHT * n_tokens + 1.0)
    fig = new_figure(PANEL_WIDTH * len(ROLES) + 1.4, height * len(comp.kinds) + 0.8)
    axes = fig.subplots(len(comp.kinds), len(ROLES), squeeze=False)
    prompts = result.case.prompts()
    for row, kind in enumerate(comp.kinds):
        low, high = _row_scale(traces, kind, comp.window)
        base = base_kind(kind)
        mesh = None
        for col, role in enumerate(ROLES):
            t, ax = traces[role], axes[row][col]
            grid = t.window_grid(kind, comp.window)
            mesh = ax.pcolormesh(grid, cmap=SITE_CMAPS[base], vmin=low, vmax=high)
            ax.invert_yaxis()
            labels = token_labels(t.tokens, t.subject_span)
            ax.set_yticks(np.arange(len(labels)) + 0.5, labels, fontsize=SMALL)
            layer_ticks(ax, n_layers, PANEL_WIDTH - 1.2)
            ax.tick_params(axis="x", labelsize=SMALL)
            ranked = comp.rows[kind][role]
            ax.add_patch(Rectangle((0, ranked), n_layers, 1, fill=False, edgecolor="black", linewidth=1.2))
            if row == 0:
                ax.set_title(f"{ROLE_TITLES[role]}:\n{_wrap(prompts[role].prompt + ' -> ' + prompts[role].answer)}",
                             fontsize=NOTE)
            top = comp.rankings[kind][role][:3]
            ax.set_xlabel(f"layer; top 3 at the outlined row: {top}", fontsize=SMALL)
            if col == 0:
                restored = "restored at one layer" if comp.window == "single" or base == "hidden" else "window centre"
                ax.set_ylabel(f"{KIND_NAMES[base]} {restored}", fontsize=NOTE)
        bar = fig.colorbar(mesh, ax=list(axes[row]), fraction=0.02, pad=0.01)
        bar.set_label(f"p(answer), {kind}", fontsize=SMALL)
        bar.ax.tick_params(labelsize=SMALL)
    fig.suptitle(f"Causal traces of one subject ({result.subject}) on {Path(str(result.model)).name}: each row on "
                 "one colour scale;\n* = corrupted subject tokens; outlined = the row whose layers are ranked",
                 fontsize=TITLE)
    return save_figure(fig, path, formats, dpi)


def draw_case_overlap(result, path: str | os.PathLike, formats: Sequence[str] = ("png",), dpi: int = DPI) -> list[Path]:
    """Per kind, the top-k layer similarity of each pair over k with the chance baseline; writes PATH.<fmt>."""
    comp = result.comparison
    if not comp.kinds:
        raise KelocateError("nothing to draw: the case has no traced kinds")
    fig = new_figure(3.6 * len(comp.kinds) + 0.4, 3.4)
    axes = fig.subplots(1, len(comp.kinds), squeeze=False)[0]
    for ax, kind in zip(axes, comp.kinds, strict=True):
        for pair, values in comp.overlap[kind].items():
            color, line, marker = PAIR_STYLES.get(pair, (SERIES[4], "-", "x"))
            ax.plot(comp.ks, values, line, color=color, marker=marker, markersize=4,
                    label=f"{pair} (mean {comp.means[kind][pair]:.2f})")
        ax.plot(comp.ks, comp.chance, ":", color="black", label=f"chance (mean {comp.chance_means[kind]:.2f})")
        ax.axvspan(0.5, comp.depth[kind] + 0.5, color="0.5", alpha=0.12, lw=0)  # the k the verdict reads
        ax.set_title(f"{kind}: finds {VERDICT_SHORT[comp.kind_verdicts[kind]]}", fontsize=TITLE)
        ax.set_xlabel(f"k (top-k layers at the {comp.token} token)", fontsize=SMALL)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=GRID_ALPHA)
        ax.tick_params(labelsize=SMALL)
        ax.legend(fontsize=SMALL - 1, loc="lower right")
    axes[0].set_ylabel(f"{comp.similarity} overlap of top-k layers", fontsize=SMALL)
    fig.suptitle(f"Top-k layer overlap of the three traces ({result.subject}, {Path(str(result.model)).name}); "
                 "legend: means over the shaded k = 1..K (the layers the rows locate)", fontsize=NOTE)
    fig.tight_layout()
    return save_figure(fig, path, formats, dpi)


def save_case_figures(result, folder: str | os.PathLike, formats: Sequence[str] = ("png",)) -> list[Path]:
    """FOLDER/case_traces.<fmt> and FOLDER/case_overlap.<fmt>; returns the written paths."""
    folder = Path(folder)
    return [*draw_case_traces(result, folder / "case_traces", formats),
            *draw_case_overlap(result, folder / "case_overlap", formats)]
