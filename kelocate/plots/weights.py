"""The figures of the weights study (`kelocate.studies.weights`): the Figure 7 analog (projection Hit@k of the
compared methods over their common successes), the Figure 6 analog (|dW| of the compared methods on one fact,
one colour scale) and the concentration bars of every method over every edit. Data in, files out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kelocate.errors import KelocateError
from kelocate.plots.projection import draw_projection_hits
from kelocate.plots.sparsity import draw_concentration_bars, draw_delta_heatmaps

FIGURES = ("projection", "heatmaps", "concentration")


def _label(method: str, name: str) -> str:
    """'rome', 'model.layers.5.mlp.down_proj.weight' -> 'rome: layers.5 down_proj'."""
    parts = name.removeprefix("model.").removesuffix(".weight").split(".")
    return f"{method}: {'.'.join(parts[:2])} {parts[-1]}" if len(parts) > 2 else f"{method}: {name}"


def draw_weights(data: Mapping[str, Any], heatmaps: Mapping[str, np.ndarray], folder: str | Path,
                 formats: Sequence[str] = ("png",)) -> dict[str, list[Path]]:
    """Write FOLDER/weights_{projection,heatmaps,concentration}.<fmt> from `WeightsResult.to_json()` data and its
    heatmaps; a figure with nothing to draw (no common success, no heatmap) is left out. Returns name -> files."""
    if not isinstance(data, Mapping) or "summary" not in data or "rows" not in data:
        raise KelocateError("not a weights result; pass WeightsResult.to_json() or the study's weights.json")
    folder = Path(folder)
    methods = data["summary"]["methods"]
    compared = data["summary"]["compared"]
    out: dict[str, list[Path]] = {}
    common = {m: methods[m]["projection_common"] for m in compared if methods.get(m, {}).get("projection_common")}
    if common:
        n = len(data["summary"]["common_facts"])
        out["projection"] = draw_projection_hits(
            common, folder / "weights_projection", formats=tuple(formats),
            title=f"{data['model']}: Hit@k of the new target in the top-5 dW columns, {n} facts every compared "
                  "method edited")
    shown = {_label(m, data["heatmap_names"][m]): heatmaps[m] for m in compared if m in heatmaps}
    if shown:
        fact = data["facts"][data["heatmap_fact"]]
        out["heatmaps"] = draw_delta_heatmaps(
            shown, folder / "weights_heatmaps", formats, log=True,
            title=f"|dW| on one fact: {fact['prompt']!r} -> {fact['new_object']!r} (one log colour scale)")
    values = {m: v["concentration"] for m, v in methods.items() if any(v["concentration"].values())}
    if values:
        out["concentration"] = draw_concentration_bars(values, folder / "weights_concentration", formats,
                                                       title=f"{data['model']}: concentration of dW over value "
                                                             "columns, every edit (mean, 95% of edits)")
    return out
