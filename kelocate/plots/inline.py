"""Small figures of single results, for the notebook views: |dW| per layer of an edit, the top token logits of a
value vector, and the cumulative share of an edit's mass over its sorted value columns."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from kelocate.plots.style import GRID_ALPHA, SERIES, SMALL, TITLE, new_figure


def layer_norms_figure(labels: Sequence[str], norms: Sequence[float], title: str) -> Figure:
    """Bars of ||dW||_F per written layer."""
    fig = new_figure(max(3.0, 0.45 * len(labels) + 1.5), 2.4)
    ax = fig.add_subplot()
    ax.bar(range(len(labels)), norms, color=SERIES[0])
    ax.set_xticks(range(len(labels)), labels, fontsize=SMALL)
    ax.set_ylabel("||dW||_F", fontsize=SMALL)
    ax.set_title(title, fontsize=TITLE)
    ax.grid(axis="y", alpha=GRID_ALPHA)
    fig.tight_layout()
    return fig


def token_logits_figure(tokens: Sequence[str], logits: Sequence[float], title: str) -> Figure:
    """Horizontal bars of the top tokens' logits, the highest on top."""
    fig = new_figure(3.8, 0.25 * len(tokens) + 0.9)
    ax = fig.add_subplot()
    ax.barh(range(len(tokens)), logits, color=SERIES[1])
    ax.set_yticks(range(len(tokens)), [repr(t) for t in tokens], fontsize=SMALL)
    ax.invert_yaxis()
    ax.set_xlabel("logit", fontsize=SMALL)
    ax.set_title(title, fontsize=TITLE)
    fig.tight_layout()
    return fig


def cumulative_mass_figure(masses: dict[str, np.ndarray], title: str) -> Figure:
    """Per parameter, the share of the total mass held by its n largest columns against n (log scale): a step
    to 1 at n = 1 is one column, the diagonal of a uniform spread is every column alike."""
    fig = new_figure(4.2, 2.8)
    ax = fig.add_subplot()
    for i, (name, m) in enumerate(masses.items()):
        m = np.sort(np.asarray(m, dtype=float))[::-1]
        if m.sum() <= 0:
            continue
        ax.plot(np.arange(1, m.size + 1), np.cumsum(m) / m.sum(), color=SERIES[i % len(SERIES)], label=name)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("n largest columns", fontsize=SMALL)
    ax.set_ylabel("share of the mass", fontsize=SMALL)
    ax.set_title(title, fontsize=TITLE)
    ax.grid(alpha=GRID_ALPHA)
    ax.legend(fontsize=SMALL)
    fig.tight_layout()
    return fig
