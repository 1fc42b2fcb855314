"""PMET (Li et al. 2024): attention and MLP deltas optimised together, only the MLPs written.

At the last layer of the range, a delta on the attention output and one on the MLP output are optimised
jointly at the subject's last token (each clamped to its own site's norm, `target.optimize_target`), so
the MLP target need not carry what attention would have carried. Only the MLP target z*_mlp is used:
layer by layer, with the MLP output of the last layer read after the edits so far,

    R  = (z*_mlp - mlp_out_now) / sqrt(layers left)          (square-root spreading; MEMIT divides by the count)
    dW = R K^T (lambda C + K K^T)^-1

and only `down_proj` weights are written.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from kelocate.edit.keys import read_at, subject_row
from kelocate.edit.methods.memit import MEMIT
from kelocate.edit.request import EditRequest
from kelocate.edit.target import optimize_target


class PMET(MEMIT):
    """Precise model editing: joint attention/MLP targets, MLP-only writes, square-root spreading."""

    method = "pmet"
    target_sites = ("attn", "mlp")
    spreading = "sqrt"

    def targets(self, model, requests: list[EditRequest], layers: list[int], templates: list[str],
                hp: dict[str, Any]) -> tuple[torch.Tensor, list[dict]]:
        found = [optimize_target(model, r, layers[-1], self.target_sites, templates, hp) for r in requests]
        return torch.stack([f.values["mlp"] for f in found]), [f.summary() for f in found]

    def spread(self, resid: torch.Tensor, left: int) -> torch.Tensor:
        return resid / math.sqrt(left)

    def current(self, model, requests: list[EditRequest], layer: int, token: str) -> torch.Tensor:
        """The MLP output of `layer` at each request's edit token (bare prompt): [n, d_model]."""
        rows = [subject_row(model, r.prompt, r.subject, token=token) for r in requests]
        return read_at(model, rows, "mlp", [layer])[layer]
