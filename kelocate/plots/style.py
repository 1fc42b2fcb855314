"""The one style of every kelocate figure: formats, how a figure is made and saved, colours and font sizes.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas: no pyplot, no global backend, nothing
shown, so drawing works in a terminal, a test or a worker process and never changes a user's matplotlib
state. Each figure is written atomically once per requested format (png, pdf, svg), cropped to its content
at one resolution; every module of `plots/` draws through `new_figure` and `save_figure` and takes its
colours and font sizes from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kelocate.atomic import write_with
from kelocate.errors import KelocateError

FORMATS = ("png", "pdf", "svg")
DPI = 150

# font sizes (points)
TITLE = 10  # a panel's title
NOTE = 9  # a title of several lines, notes
SMALL = 8  # legends, dense tick labels

# colours: a sequential colour map per traced site (ROME's), and the series of line plots
SITE_CMAPS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
SITE_NAMES = {"hidden": "single restored layer", "mlp": "MLP", "attn": "Attn"}
SERIES = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
          "tab:olive", "tab:cyan")
GRID_ALPHA = 0.3  # background grid lines
BAND_ALPHA = 0.25  # confidence bands


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """'png,pdf' -> ('png', 'pdf'); an unknown format is a KelocateError."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in items if f.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise KelocateError(f"unknown figure format {bad[0] if bad else formats!r}; use {', '.join(FORMATS)}")
    return out


def new_figure(width: float, height: float) -> Figure:
    """A figure of `width` x `height` inches on the Agg canvas (no pyplot)."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: str | Path, formats: Sequence[str], dpi: int = DPI) -> list[Path]:
    """Write `fig` as STEM.<fmt> for every format, each atomically; returns the paths."""
    FigureCanvasAgg(fig)
    paths = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        write_with(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, bbox_inches="tight", dpi=dpi))
        paths.append(path)
    return paths
