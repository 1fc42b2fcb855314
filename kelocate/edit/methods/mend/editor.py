"""The MEND editor: a trained hypernetwork (`trained=DIR`, written by `kelocate train mend`) turns the edit's
gradient factors into a weight update of the layers it was trained for, written in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kelocate.edit.base import Editor
from kelocate.edit.methods.mend.hypernetwork import Hypernetwork, factors, load_hypernetwork
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError
from kelocate.model import weights


class MEND(Editor):
    """Edit with a trained MEND hypernetwork (`trained` = its folder or a loaded `Hypernetwork`); it edits the
    layers its hypernetwork was trained for (nothing to locate)."""

    method = "mend"
    batch = True

    def __init__(self, config_file=None, trained: str | Path | Hypernetwork | None = None, **overrides: Any) -> None:
        super().__init__(config_file, **overrides)
        self.trained = trained

    def network(self, model) -> Hypernetwork:
        if self.trained is None:
            raise KelocateError("mend needs a trained hypernetwork: pass --trained DIR (see `kelocate train mend`)")
        if not isinstance(self.trained, Hypernetwork):
            self.trained = load_hypernetwork(self.trained, model)
        elif self.trained.config.fingerprint != model.fingerprint:
            raise KelocateError("this MEND hypernetwork was trained for another model; train one for this model")
        return self.trained

    def apply(self, model, requests, layers=None, layer_origin=None):
        net = self.network(model)
        return super().apply(model, requests, layers=net.config.layers,
                             layer_origin=layer_origin or {"source": "mend hypernetwork", "layers": net.config.layers})

    def _edit(self, model, requests: list[EditRequest], layers: list[int], hp: dict[str, Any]) -> dict[str, Any]:
        net = self.network(model)
        with torch.no_grad():
            found = factors(model, requests, layers)
            for layer, (u, delta) in found.items():
                param = weights.mlp_out(model, layer)
                param.add_(net.transforms[str(layer)](u, delta).to(param.dtype))
        return {"hypernetwork_steps": net.config.trained_steps}
