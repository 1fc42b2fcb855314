"""The SERAC editor: an edit goes into the memory of a trained SERAC (`trained=DIR`, written by `kelocate train
serac`), not into the weights.

Each edit pushes one layer onto the model's serving stack (`kelocate.model.serving`) whose forward is a
`Router` serving the memory so far plus the new requests (the scope classifier and the counterfactual model
are loaded once and shared by the routers of one checkpoint); reverting pops it, so the router below, with
the memory before the edit, serves again. Every metric works on a SERAC model unchanged: the model's
`logits` (and so every score and generation) go through the top router.

Serving state (what the record stores and restores, `serving_state`): {"checkpoint": folder, "memory":
[request dicts]} of the top SERAC layer, or None when the model serves no SERAC memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kelocate.edit.base import Editor
from kelocate.edit.methods.serac.router import Router, load_checkpoint
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError
from kelocate.model.serving import ServingLayer

OWNER = "serac"  # the owner name of SERAC's serving layers


def serving_router(model) -> Router | None:
    """The router of the top-most SERAC layer on the model's serving stack (None: no SERAC memory served)."""
    layers = model.serving.layers_of(OWNER)
    return layers[-1].state if layers else None


def push_router(model, router: Router) -> None:
    """Serve `router`: a new top layer whose forward stands in for the bridge's."""
    model.serving.push(ServingLayer(OWNER, forward=router, state=router))


class SERAC(Editor):
    """Edit by adding requests to the memory of a trained SERAC (`trained` = its folder)."""

    method = "serac"
    batch = True
    uses_layers = False

    def __init__(self, config_file=None, trained: str | Path | None = None, **overrides: Any) -> None:
        super().__init__(config_file, **overrides)
        self.trained = trained

    def parameters(self, model, layers: Sequence[int], hp: dict[str, Any]) -> list[str]:
        return []

    def _check(self, model, requests, layers, hp) -> None:
        if self.trained is None:
            raise KelocateError("serac needs a trained checkpoint: pass --trained DIR (see `kelocate train serac`)")

    def _edit(self, model, requests: list[EditRequest], layers: list[int], hp: dict[str, Any]) -> dict[str, Any]:
        folder = str(Path(self.trained).resolve())
        current = serving_router(model)
        served = model.serving.forward
        if served is not None and (served is not current or current.checkpoint != folder):
            raise KelocateError("this model already serves other edits through another router; revert them first")
        base = current if current is not None else load_checkpoint(folder, model, hp["threshold"])
        router = base.with_memory(base.memory + list(requests), threshold=float(hp["threshold"]))
        push_router(model, router)
        return {"checkpoint": folder, "memory_size": len(router.memory)}

    # ------------------------------------------------------------------ serving state (see `Editor`)
    @classmethod
    def serving_state(cls, model) -> dict[str, Any] | None:
        """The checkpoint and memory of the top SERAC layer (None: no SERAC memory served)."""
        router = serving_router(model)
        if router is None:
            return None
        return {"checkpoint": router.checkpoint, "memory": [r.to_json() for r in router.memory]}

    @classmethod
    def restore_serving_state(cls, model, state: dict[str, Any] | None) -> None:
        """Pop SERAC layers from the top until the top one serves `state`'s memory (a revert), or push a router
        that serves it (applying a record: on the router of the same checkpoint below it, else one loaded from
        the checkpoint)."""
        target = list(state["memory"]) if state else []
        layers = model.serving.layers_of(OWNER)
        while layers and [r.to_json() for r in layers[-1].state.memory] != target:
            if len(layers[-1].state.memory) < len(target):
                break  # a smaller memory below: the state is reached by pushing
            model.serving.pop(layers.pop())
        if not target or (layers and [r.to_json() for r in layers[-1].state.memory] == target):
            return
        if state.get("checkpoint") is None:
            raise KelocateError("this SERAC edit does not name its checkpoint; apply it with the SERAC editor")
        below = layers[-1].state if layers else None
        base = below if below is not None and below.checkpoint == state["checkpoint"] else \
            load_checkpoint(state["checkpoint"], model)
        push_router(model, base.with_memory([EditRequest.from_json(r) for r in target]))
