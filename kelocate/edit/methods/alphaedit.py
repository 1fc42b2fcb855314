"""AlphaEdit (Fang et al., ICLR 2025): MEMIT's update projected onto the null space of preserved knowledge.

With K0 the keys of preserved knowledge (summarised by C = E[k k^T] over a corpus), take the eigenvectors
U of C whose eigenvalues are below `nullspace_threshold` and P = U U^T: then P K0 ~= 0. Per layer

    dW^T = (P (K K^T + K_p K_p^T) + l2 I)^-1  P K R^T

where K_p are the keys of this editor's earlier edits that are still applied (sequential editing; a
reverted record's keys drop out). The solution lies in P's range, so dW = dW P and dW K0 ~= 0: the update
leaves the preserved keys' outputs alone, and later edits do not undo earlier ones. The editor object
keeps P and, per applied record, its keys (`reset()` forgets them all).
"""

from __future__ import annotations

from typing import Any

import torch

from kelocate.edit.covariance import covariance, covariance_key
from kelocate.edit.keys import mean_keys, templates_for
from kelocate.edit.methods.memit import MEMIT
from kelocate.edit.record import EditRecord


def null_space_projection(cov: torch.Tensor, threshold: float) -> tuple[torch.Tensor, int]:
    """P = U U^T over the eigenvectors of `cov` with eigenvalues below `threshold`; and their number."""
    values, vectors = torch.linalg.eigh(cov.double())
    small = vectors[:, values < threshold]
    return small @ small.T, int(small.shape[1])


def alphaedit_update(projection: torch.Tensor, keys: torch.Tensor, resid: torch.Tensor,
                     earlier: torch.Tensor | None, l2: float) -> torch.Tensor:
    """AlphaEdit's closed form dW ([d_model, d_mlp], float64)."""
    p, k = projection.double().to(keys.device), keys.double()
    gram = k @ k.T + (earlier.double().to(keys.device) if earlier is not None else 0)
    lhs = p @ gram + l2 * torch.eye(p.shape[0], dtype=torch.float64, device=p.device)
    return torch.linalg.solve(lhs, p @ k @ resid.double().T).T


class AlphaEdit(MEMIT):
    """MEMIT with null-space-constrained updates and a memory of earlier edits' keys."""

    method = "alphaedit"

    def __init__(self, config_file=None, corpus=None, **overrides: Any) -> None:
        super().__init__(config_file, corpus, **overrides)
        self._projections: dict[tuple, tuple[torch.Tensor, int]] = {}
        self._history: list[tuple[EditRecord, dict[int, torch.Tensor]]] = []  # (record, {layer: keys})
        self._pending: dict[int, torch.Tensor] = {}
        self._dims: dict[int, int] = {}  # layer -> null-space dimensions of the projection the last edit used

    def reset(self) -> None:
        """Forget earlier edits' keys (to start a new sequence on a model edited otherwise)."""
        self._history.clear()

    def earlier(self, layer: int) -> torch.Tensor | None:
        """K_p K_p^T of `layer` over this editor's records that are still applied (None: no such edit)."""
        self._history = [(r, keys) for r, keys in self._history if r.applied]
        parts = [keys[layer] for _, keys in self._history if layer in keys]
        if not parts:
            return None
        k = torch.cat(parts, dim=1)
        return k @ k.T  # on the CPU, where the keys are kept; moved to the keys' device by the update

    def apply(self, model, requests, layers=None, layer_origin=None) -> EditRecord:
        self._pending = {}
        record = super().apply(model, requests, layers=layers, layer_origin=layer_origin)
        self._history.append((record, self._pending))
        return record

    def projection(self, model, layer: int, hp: dict[str, Any]) -> torch.Tensor:
        """P of `layer`, kept under the key of the statistics it comes from (`covariance_key`: weights, corpus,
        texts and tokens used) and the threshold, so another corpus or length gives another P."""
        return self._projection(model, layer, hp)[0]

    def _projection(self, model, layer: int, hp: dict[str, Any]) -> tuple[torch.Tensor, int]:
        key = (*covariance_key(model, layer, hp, self.corpus), float(hp["nullspace_threshold"]))
        if key not in self._projections:
            if len(self._projections) >= 8:  # d_mlp^2 float64 each: keep a few layers only
                self._projections.clear()
            cov, self._source = covariance(model, layer, hp, self.corpus)
            self._projections[key] = null_space_projection(cov, hp["nullspace_threshold"])
        return self._projections[key]

    def update(self, model, layer: int, keys: torch.Tensor, resid: torch.Tensor, hp: dict[str, Any]) -> torch.Tensor:
        p, dims = self._projection(model, layer, hp)
        self._dims[layer] = dims  # read now: the memo may be cleared by a later layer of the same edit
        delta = alphaedit_update(p, keys, resid, self.earlier(layer), hp["l2"])
        self._pending[layer] = keys.double().cpu()
        return delta

    def _edit(self, model, requests, layers, hp) -> dict[str, Any]:
        extra = super()._edit(model, requests, layers, hp)
        # AlphaEdit remembers the keys as they are after the edit (the layers below changed them)
        pairs = [(r.prompt, r.subject) for r in requests]
        after = mean_keys(model, pairs, templates_for(model, hp), layers, grouped=True,
                          token=hp.get("token", "last_subject"))
        self._pending = {layer: k.double().cpu() for layer, k in after.items()}
        extra["null_space_dims"] = {str(layer): self._dims[layer] for layer in layers}
        return extra
