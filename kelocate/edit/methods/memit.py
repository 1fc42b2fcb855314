"""MEMIT (Meng et al. 2023): many facts into a range of layers, one least-squares update per layer.

For each request, the hidden state leaving the last layer of the range is optimised at the subject's
last token (`target.optimize_target`, site 'hidden'): z*. Then, layer by layer from the first:

    K   = keys of the requests at this layer ([d_mlp, n], context-averaged)
    R   = (z* - z_now) / (layers left, this one included)     z_now read with the weights edited so far
    dW  = R K^T (lambda C + K K^T)^-1             (float64 solve; C = E[k k^T], lambda = mom2_update_weight)

so the residual is spread evenly over the range while keys typical of the corpus (C) keep their outputs.
"""

from __future__ import annotations

from typing import Any

import torch

from kelocate.edit.base import Editor
from kelocate.edit.covariance import covariance, covariances
from kelocate.edit.keys import mean_keys, read_at, subject_row, templates_for
from kelocate.edit.request import EditRequest
from kelocate.edit.target import optimize_target
from kelocate.model import weights
from kelocate.timing import phase


def memit_update(cov: torch.Tensor, keys: torch.Tensor, resid: torch.Tensor, weight: float) -> torch.Tensor:
    """MEMIT's closed form dW = R K^T (weight C + K K^T)^-1 ([d_model, d_mlp], float64)."""
    k = keys.double()
    adjusted = torch.linalg.solve(weight * cov.double() + k @ k.T, k)  # [d_mlp, n]
    return resid.double() @ adjusted.T


class MEMIT(Editor):
    """Mass-editing memory in a transformer: a batch of facts spread over a range of layers."""

    method = "memit"
    batch = True
    target_sites: tuple[str, ...] = ("hidden",)
    spreading = "even"

    def __init__(self, config_file=None, corpus=None, **overrides: Any) -> None:
        super().__init__(config_file, **overrides)
        self.corpus = corpus

    def targets(self, model, requests: list[EditRequest], layers: list[int], templates: list[str],
                hp: dict[str, Any]) -> tuple[torch.Tensor, list[dict]]:
        """z* per request at the last layer of the range: [n, d_model], and optimisation summaries."""
        found = [optimize_target(model, r, layers[-1], self.target_sites, templates, hp) for r in requests]
        return torch.stack([f.values["hidden"] for f in found]), [f.summary() for f in found]

    def spread(self, resid: torch.Tensor, left: int) -> torch.Tensor:
        """The share of the residual this layer takes: an even split over the layers left."""
        return resid / left

    def update(self, model, layer: int, keys: torch.Tensor, resid: torch.Tensor, hp: dict[str, Any]) -> torch.Tensor:
        cov, self._source = covariance(model, layer, hp, self.corpus)
        return memit_update(cov, keys, resid, hp["mom2_update_weight"])

    def current(self, model, requests: list[EditRequest], layer: int, token: str) -> torch.Tensor:
        """The hidden state leaving `layer` at each request's edit token (bare prompt): [n, d_model]."""
        rows = [subject_row(model, r.prompt, r.subject, token=token) for r in requests]
        return read_at(model, rows, "hidden", [layer])[layer]

    def _edit(self, model, requests: list[EditRequest], layers: list[int], hp: dict[str, Any]) -> dict[str, Any]:
        templates = templates_for(model, hp)
        zs, summaries = self.targets(model, requests, layers, templates, hp)
        pairs = [(r.prompt, r.subject) for r in requests]
        token = hp.get("token", "last_subject")
        self._source = ""
        covariances(model, layers, hp, self.corpus)  # every layer's statistics in one pass over the corpus
        for i, layer in enumerate(layers):
            keys = mean_keys(model, pairs, templates, [layer], grouped=True, token=token)[layer]
            resid = self.spread((zs - self.current(model, requests, layers[-1], token)).T, len(layers) - i)
            with phase("update"):
                delta = self.update(model, layer, keys, resid, hp)
            param = weights.mlp_out(model, layer)
            with torch.no_grad():
                param.copy_((param.double() + delta).to(param.dtype))
        notes = [f"covariance from {self._source}"] if self._source else []
        return {"targets": summaries, "spreading": self.spreading, "notes": notes}
