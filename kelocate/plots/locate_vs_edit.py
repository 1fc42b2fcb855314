"""The locate-vs-edit figure: does the traced effect of a layer predict how well ROME edits
there?

Left, one point per (fact, layer): the single-layer MLP indirect effect at the edit token against the edit's
paraphrase success (filled) and p(new target) (hollow), coloured by layer, with the pooled Pearson / Spearman r in
the title. Right, per layer: the mean effect and the mean edit success, paraphrase success and p(new target), with
the profile's fixed layer marked. The data is `LocateVsEditResult.to_json()` (`kelocate.studies.locate_vs_edit`) as
a plain dict; this module only draws, in the one style of `plots/style.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kelocate.errors import KelocateError
from kelocate.plots.style import GRID_ALPHA, NOTE, SERIES, SMALL, TITLE, new_figure, save_figure


def _r(summary: Mapping[str, Any], metric: str) -> str:
    """'Pearson 0.12, Spearman 0.34' of a metric's pooled correlation ('n/a' when undefined)."""
    pooled = summary.get("metrics", {}).get(metric, {}).get("pooled", {})
    text = ["n/a" if v is None or v != v else f"{v:.2f}" for v in (pooled.get("pearson"), pooled.get("spearman"))]
    return f"Pearson {text[0]}, Spearman {text[1]}"


def draw_locate_vs_edit(result: Mapping[str, Any], stem: str | Path,
                        formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write the figure as STEM.<fmt> for every format; returns the paths."""
    if not isinstance(result, Mapping) or "facts" not in result or "summary" not in result:
        raise KelocateError("not a locate-vs-edit result; pass LocateVsEditResult.to_json() or its JSON file")
    n_layers = int(result["n_layers"])
    summary = result["summary"]
    fig = new_figure(12, 4.3)
    scatter, means = fig.subplots(1, 2)
    for layer in range(n_layers):
        color = SERIES[layer % len(SERIES)]
        xs = [f["effect"][layer] for f in result["facts"]]
        scatter.scatter(xs, [f["paraphrase"][layer] for f in result["facts"]], color=color, s=18, alpha=0.8,
                        label=f"layer {layer}")
        scatter.scatter(xs, [f["target_prob"][layer] for f in result["facts"]], facecolors="none",
                        edgecolors=color, s=18, alpha=0.8)
    scatter.set_title(f"per (fact, layer): paraphrase success (filled) vs effect\n{_r(summary, 'paraphrase')}; "
                      f"p(target) (hollow): {_r(summary, 'target_prob')}", fontsize=NOTE)
    scatter.set_xlabel(f"single-layer MLP indirect effect at the edit token ({result.get('token', '')})")
    scatter.set_ylabel("after ROME at that layer")
    scatter.legend(fontsize=SMALL, ncol=2)
    layers = list(range(n_layers))
    per = summary["per_layer"]
    means.plot(layers, per["effect"], color="black", marker="o", label="indirect effect")
    for i, (metric, label) in enumerate([("success", "edit success"), ("paraphrase", "paraphrase success"),
                                         ("target_prob", "p(new target)")]):
        means.plot(layers, per[metric], color=SERIES[i], marker="o", linestyle="--", label=label)
    fixed = result.get("fixed_layer")
    if fixed is not None:
        means.axvline(fixed, color="gray", linestyle=":", label=f"profile layer {fixed}")
    counts = summary.get("auto_layer_counts", [])
    means.set_title(f"per-layer means over {len(result['facts'])} facts\nlargest effect per layer: {counts}",
                    fontsize=TITLE)
    means.set_xlabel("layer")
    means.set_xticks(layers)
    means.legend(fontsize=SMALL)
    for ax in (scatter, means):
        ax.grid(alpha=GRID_ALPHA)
    fig.suptitle(f"Does locating predict editing? {result.get('model', '')}", fontsize=NOTE)
    fig.tight_layout()
    return save_figure(fig, stem, formats)
