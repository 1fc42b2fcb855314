"""The editor contract: `editor.apply(model, requests, layers=...) -> EditRecord`, reverted exactly.

An editor subclass says which parameters it writes (`parameters`) and writes them in place (`_edit`);
this base class resolves its hyper-parameters, checks requests and layers, snapshots what will be
written, rolls back on an error or a non-finite weight, and builds the record. Editors take layers (ints)
or neurons ((layer, index) pairs) and never run a locator: `kelocate.locate_then_edit` wires located layers in,
as the method's registry entry says (`locate`).

Editors that serve answers instead of (or besides) writing weights (ICE's text, SERAC's memory) push onto
the model's serving stack and implement a small protocol: `serving_state(model)` (a JSON-able snapshot of
what the method serves on the model; None by default: nothing) and `restore_serving_state(model, state)`.
The record stores the state before and after the edit and, on revert or re-apply, asks the editor class of
its method (found through the registry) to restore it: neither this module nor the record imports a method.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from kelocate import timing
from kelocate.edit import config as edit_config
from kelocate.edit import registry
from kelocate.edit.record import EditRecord, guarded_write
from kelocate.edit.request import EditRequest, as_requests
from kelocate.errors import KelocateError
from kelocate.model import weights


def check_layers(model, layers: int | Iterable[int]) -> list[int]:
    """Layers as a sorted list of valid ints (one line of error otherwise)."""
    raw = [layers] if isinstance(layers, int) else list(layers)
    if not raw:
        raise KelocateError("no layers given; pass --layers N, a range like 4-8, or auto")
    out = []
    for layer in raw:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise KelocateError(f"layer {layer!r} is not an integer; pass layer numbers 0..{model.n_layers - 1}")
        out.append(model.check_layer(layer))
    return sorted(dict.fromkeys(out))


class Editor(ABC):
    """Base of every editor. Subclasses set `method` and implement `_edit` (and `parameters` when they
    write anything but the MLP value matrices of their layers)."""

    method: ClassVar[str]
    batch: ClassVar[bool] = False  # can one record hold many requests?
    uses_layers: ClassVar[bool] = True
    # how `locate_then_edit` locates where this editor writes: the `locate` property (the registry's entry)

    def __init__(self, config_file: str | Path | None = None, **overrides: Any) -> None:
        self.config_file = config_file
        self.overrides = overrides

    @property
    def locate(self) -> str | None:
        """How `locate_then_edit` locates where this editor writes (the method's registry entry): 'layer' (one
        MLP layer), 'range' (MEMIT's consecutive layers), 'neurons' (knowledge neurons), or None (nothing to
        locate). An editor class outside the registry is taken as a one-layer editor."""
        entry = registry.METHODS.get(self.method)
        return entry.locate if entry is not None else "layer"

    def hparams(self, model) -> dict[str, Any]:
        """The resolved hyper-parameters on `model` (profile file < user file < keyword overrides)."""
        return edit_config.resolve(self.method, model, self.config_file, self.overrides)

    # ------------------------------------------------------------------ what subclasses provide
    def parameters(self, model, layers: Sequence[int], hp: dict[str, Any]) -> list[str]:
        """HF names of the parameters this edit writes: by default each layer's `down_proj` (the MLP value
        matrix that ROME, MEMIT, PMET, AlphaEdit, KN, FT and MEND write)."""
        return [weights.mlp_out_name(layer) for layer in layers]

    @abstractmethod
    def _edit(self, model, requests: list[EditRequest], layers: list[int], hp: dict[str, Any]) -> dict[str, Any]:
        """Write the edit in place; return method-specific facts for the record (losses, norms, ...)."""

    @classmethod
    def serving_state(cls, model) -> Any:
        """What this method serves on `model` beyond its weights, as JSON-able data compared for equality
        (ICE: its text; SERAC: its memory); None (the default) for editors that serve nothing."""
        return None

    @classmethod
    def restore_serving_state(cls, model, state: Any) -> None:
        """Make `model` serve `state` (a value `serving_state` returned), pushing or popping its serving layers.
        Only called by records and `apply`, with a state this method produced."""
        return None

    def _check(self, model, requests: list[EditRequest], layers: list[int], hp: dict[str, Any]) -> None:
        """Extra checks before anything is written (subclasses may add their own)."""
        return None

    # ------------------------------------------------------------------ the contract
    def apply(self, model, requests: EditRequest | dict | Sequence[EditRequest | dict],
              layers: int | Iterable[int] | None = None, layer_origin: dict[str, Any] | None = None) -> EditRecord:
        """Edit `model` in place for `requests` at `layers` (default: the profile's) and return the record."""
        requests = as_requests(requests)
        if isinstance(layers, str):
            raise KelocateError(f"{self.method}.apply takes layer numbers, not {layers!r}; for located layers use "
                                "kelocate.locate_and_edit(model, editor, request, layers='auto')")
        if len(requests) > 1 and not self.batch:
            raise KelocateError(f"{self.method} edits one fact at a time; apply the requests one by one "
                                "(sequential editing) or use memit or alphaedit for a batch")
        hp = self.hparams(model)
        if layers is None:
            layers = hp.get("layers")
            origin = {"source": "config", "profile": hp["profile"]}
        else:
            origin = {"source": "given"}
        layers = check_layers(model, layers) if self.uses_layers else []
        for request in requests:
            model.subject_span(request.prompt, request.subject)  # one clear error for a bad subject
        self._check(model, requests, layers, hp)
        names = self.parameters(model, layers, hp)
        start = time.perf_counter()
        served = self.serving_state(model)
        with guarded_write(model, names, self.method) as before, timing.collecting() as phases:
            try:
                extra = self._edit(model, requests, layers, hp)
            except torch.linalg.LinAlgError as exc:
                self._restore_serving(model, served)
                raise KelocateError(f"the {self.method} update could not be solved ({str(exc).splitlines()[0]}); "
                                    "use more text for the statistics (--corpus) or a larger update weight") \
                    from None
            except BaseException:
                self._restore_serving(model, served)
                raise
        served_after = self.serving_state(model)
        after = weights.snapshot(model, names)
        attachments = extra.pop("attachments", {})
        return EditRecord(
            method=self.method, before=before, after=after, fingerprint=model.fingerprint,
            config={k: v for k, v in hp.items()}, layers=layers, neurons=list(extra.pop("neurons", [])),
            layer_origin=dict(layer_origin or origin), requests=[r.to_json() for r in requests],
            timings={"edit_s": round(time.perf_counter() - start, 4),
                     **{f"{name}_s": round(seconds, 4) for name, seconds in phases.items()}},
            notes=list(extra.pop("notes", [])),
            extra=extra, applied=True, model=model, attachments=attachments,
            serving={"before": served, "after": served_after} if served_after != served else None)

    def _restore_serving(self, model, state: Any) -> None:
        """After a failed edit: what the model serves back to `state` (when the edit changed it)."""
        if self.serving_state(model) != state:
            self.restore_serving_state(model, state)
