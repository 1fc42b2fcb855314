"""ROME (Meng et al. 2022): a rank-one update of one layer's MLP value matrix (`down_proj`).

key k* : `mlp_post` at the subject's last token, averaged over context prefixes (`keys.mean_keys`);
u      : C^-1 k* with C = E[k k^T] over a corpus (`stats.py`), or k* itself without the covariance
         adjustment (`mom2_adjustment = false`); normalised to unit length;
v*     : the MLP output at that token that makes the target come out (`target.optimize_target`);
update : W <- W + r u^T with r = (v* - W k) / (u . k), k the key in the bare prompt, so that the
         edited W maps k to v* exactly and keys orthogonal to C^-1 k* (in C's metric) are untouched.
"""

from __future__ import annotations

from typing import Any

import torch

from kelocate.edit.base import Editor
from kelocate.edit.covariance import covariance
from kelocate.edit.keys import mean_keys, read_at, subject_row, templates_for
from kelocate.edit.request import EditRequest
from kelocate.edit.target import optimize_target
from kelocate.errors import KelocateError
from kelocate.model import weights
from kelocate.timing import phase


def rank_one(weight: torch.Tensor, key: torch.Tensor, value: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """ROME's closed form: the new weight W + r u^T, r = (value - W key) / (u . key), in float64."""
    w = weight.detach().double()
    u = direction.double() / direction.double().norm()
    k = key.double()
    r = (value.double() - w @ k) / (u @ k)
    return w + torch.outer(r, u)


class ROME(Editor):
    """Rank-one model editing of one layer."""

    method = "rome"

    def __init__(self, config_file=None, corpus=None, **overrides: Any) -> None:
        super().__init__(config_file, **overrides)
        self.corpus = corpus

    def _check(self, model, requests, layers, hp) -> None:
        if len(layers) != 1:
            raise KelocateError(f"ROME edits one layer, got {len(layers)} ({layers}); pass one layer, or use "
                                "memit for a range")

    def _edit(self, model, requests: list[EditRequest], layers: list[int], hp: dict[str, Any]) -> dict[str, Any]:
        (request,), (layer,) = requests, layers
        templates = templates_for(model, hp)
        token = hp.get("token", "last_subject")
        key = mean_keys(model, [(request.prompt, request.subject)], templates, [layer], token=token)[layer][:, 0]
        notes = []
        if hp["mom2_adjustment"]:
            cov, source = covariance(model, layer, hp, self.corpus)
            direction = torch.linalg.solve(cov.double(), key.double())
            notes.append(f"covariance from {source}")
        else:
            direction = key.double()
        target = optimize_target(model, request, layer, ("mlp",), templates, hp)
        bare = subject_row(model, request.prompt, request.subject, token=token)
        bare_key = read_at(model, [bare], "mlp_post", [layer])[layer][0]
        param = weights.mlp_out(model, layer)
        with phase("update"), torch.no_grad():
            param.copy_(rank_one(param, bare_key, target.values["mlp"], direction).to(param.dtype))
        return {"target": target.summary(), "notes": notes, "templates": len(templates)}
