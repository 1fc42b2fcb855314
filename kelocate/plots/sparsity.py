"""The sparsity figures of edits (the comprehensive study's Figure 6), in the one style of `plots/style.py`:
|dW| heatmaps of several edits side by side on one colour scale, and bars of the concentration measures over
many edits. Data in (numpy arrays, dicts of numbers), figure out; the numbers come from `probes.sparsity`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm, Normalize

from kelocate.errors import KelocateError
from kelocate.plots.style import DPI, GRID_ALPHA, NOTE, SERIES, SMALL, TITLE, new_figure, save_figure

HEATMAP_CMAP = "Blues"
PANEL_WIDTH = 3.2  # inches per heatmap
# what each bar panel shows, for its axis label
MEASURE_LABELS = {"top-5 share": "share of mass in top 5 columns", "top-1% share": "share of mass in top 1% columns",
                  "participation ratio": "effective number of columns", "rank": "numerical rank"}


def _norm(panels: Mapping[str, np.ndarray], log: bool) -> Normalize:
    """One colour scale for every panel: 0 .. the largest |dW| (log: the smallest positive .. the largest)."""
    top = max(float(np.max(a, initial=0.0)) for a in panels.values())
    if top <= 0:
        raise KelocateError("every |dW| to draw is zero; there is no weight change to show")
    if not log:
        return Normalize(vmin=0.0, vmax=top)
    low = min(float(a[a > 0].min()) for a in panels.values() if np.any(a > 0))
    return LogNorm(vmin=max(low, top * 1e-6), vmax=top)


def draw_delta_heatmaps(panels: Mapping[str, np.ndarray], path: str | os.PathLike,
                        formats: Sequence[str] = ("png",), log: bool = False, title: str | None = None,
                        dpi: int = DPI) -> list[Path]:
    """Heatmaps of |dW| (label -> [rows, columns] array), side by side on ONE colour scale, so that the
    methods' magnitudes compare; rows = residual dimensions, columns = neurons for `down_proj`. `log` draws
    the colours on a log scale (still shared; values below 1e-6 of the largest clip to its floor)."""
    if not panels:
        raise KelocateError("no |dW| to draw; pass at least one edit")
    arrays = {label: np.abs(np.asarray(a, dtype=np.float64)) for label, a in panels.items()}
    for label, a in arrays.items():
        if a.ndim != 2:
            raise KelocateError(f"|dW| of {label!r} is not a matrix (shape {a.shape}); pass a [rows, columns] array")
    norm = _norm(arrays, log)
    fig = new_figure(PANEL_WIDTH * len(arrays) + 0.9, 3.2)
    axes = fig.subplots(1, len(arrays), squeeze=False)[0]
    image = None
    for ax, (label, a) in zip(axes, arrays.items(), strict=True):
        image = ax.imshow(a, cmap=HEATMAP_CMAP, norm=norm, aspect="auto", interpolation="nearest")
        ax.set_title(label, fontsize=TITLE)
        ax.set_xlabel("column (neuron)", fontsize=SMALL)
        ax.tick_params(labelsize=SMALL)
    axes[0].set_ylabel("row (residual dimension)", fontsize=SMALL)
    bar = fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.02)
    bar.set_label("|dW|" + (" (log scale)" if log else ""), fontsize=SMALL)
    bar.ax.tick_params(labelsize=SMALL)
    fig.suptitle(title or "|dW| per method, one colour scale", fontsize=NOTE, y=1.04)
    return save_figure(fig, path, formats, dpi)


def draw_concentration_bars(values: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike,
                            formats: Sequence[str] = ("png",), title: str | None = None,
                            dpi: int = DPI) -> list[Path]:
    """One panel per measure (method -> measure -> values over edits, as `probes.sparsity.concentration_values`
    gives): the mean per method with the 2.5th-97.5th percentile range of the edits as an error bar and the
    number of values under each method's name."""
    if not values:
        raise KelocateError("no concentration measures to draw; pass at least one method")
    measures = list(dict.fromkeys(m for per in values.values() for m in per))
    methods = list(values)
    fig = new_figure(max(2.6, 0.55 * len(methods)) * len(measures) + 0.4, 3.2)
    axes = fig.subplots(1, len(measures), squeeze=False)[0]
    for ax, measure in zip(axes, measures, strict=True):
        labels = []
        for i, method in enumerate(methods):
            v = np.asarray(values[method].get(measure, ()), dtype=np.float64)
            labels.append(f"{method}\nn={v.size}")
            if v.size == 0:
                continue
            mean = float(v.mean())
            low, high = np.percentile(v, [2.5, 97.5])
            ax.bar(i, mean, color=SERIES[i % len(SERIES)], yerr=[[mean - low], [high - mean]], capsize=3)
        ax.set_xticks(range(len(methods)), labels, fontsize=SMALL, rotation=90 if len(methods) > 4 else 0)
        ax.set_title(measure, fontsize=TITLE)
        ax.set_ylabel(MEASURE_LABELS.get(measure, measure), fontsize=SMALL)
        if "share" in measure:
            ax.set_ylim(0, 1.02)
        ax.tick_params(axis="y", labelsize=SMALL)
        ax.grid(axis="y", alpha=GRID_ALPHA)
    fig.suptitle(title or "concentration of dW over edits (mean, 95% of edits)", fontsize=NOTE)
    fig.tight_layout()
    return save_figure(fig, path, formats, dpi)
