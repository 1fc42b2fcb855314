"""`EditRecord`: what an edit overwrote and what it wrote, so that it can be undone bit for bit.

Per parameter (HF name) the record keeps the values it overwrote (`before`) and the values it wrote
(`after`). Reverting writes `before` back, which is bit-exact (subtracting a delta in float is not).
Records stack: revert them in reverse order; a record refuses to revert weights that changed since it
was applied (a later edit still in place) and to apply onto weights that are not the ones it was made
on. `save` writes one safetensors file (tensors `before/<name>`, `after/<name>`, the rest as JSON
metadata); `EditRecord.load(path).apply_to(model)` refuses a model with another fingerprint.

An edit that serves answers instead of (or besides) writing weights (ICE's text, SERAC's memory: the
model's serving stack) leaves `serving = {"before": state, "after": state}`, opaque JSON-able states of its
method. Reverting and applying check the model serves the state expected and ask the editor class of the
record's method, found through the registry by name, to restore the other one (`Editor.serving_state`,
`restore_serving_state`): the record imports no method. Records written before this field existed
(`context_before/after`, `memory_before/after`) load into it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kelocate import display
from kelocate.atomic import os_errors, write_with
from kelocate.errors import KelocateError
from kelocate.model import weights

FORMAT = "kelocate-edit-record"
VERSION = 1


class NonFiniteEditError(KelocateError):
    """An edit produced NaN or inf weights; it was rolled back."""


@dataclass
class EditRecord:
    """One applied edit (one request, or a batch): overwritten and written values plus how they came about."""

    method: str
    before: dict[str, torch.Tensor]
    after: dict[str, torch.Tensor]
    fingerprint: str
    config: dict[str, Any] = field(default_factory=dict)
    layers: list[int] = field(default_factory=list)
    neurons: list[tuple[int, int]] = field(default_factory=list)
    layer_origin: dict[str, Any] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific facts (e.g. the optimisation loss)
    attachments: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. AdaLoRA's trained adapter
    # what the edit's method serves beyond weights (ICE's text, SERAC's memory), before and after it:
    # {"before": state, "after": state}, None when the edit changed nothing served
    serving: dict[str, Any] | None = None
    applied: bool = False
    model: Any = field(default=None, repr=False, compare=False)  # the model it is applied to, if any

    # ------------------------------------------------------------------ facts
    def _repr_html_(self) -> str | None:
        """Shown inline in Jupyter: a figure and the key numbers (`kelocate.notebook`)."""
        return display.html("edit", self)

    @property
    def names(self) -> list[str]:
        return list(self.before)

    def delta(self, name: str) -> torch.Tensor:
        """after - before of one parameter, in float32 (for probes; never used to revert)."""
        return self.after[name].float() - self.before[name].float()

    def changed_elements(self) -> int:
        """How many weight entries differ between before and after."""
        return int(sum((self.after[n] != self.before[n]).sum() for n in self.before))

    @property
    def digest(self) -> str:
        """A short hash of what the edit wrote (names and values), naming it in an edited copy's log."""
        h = hashlib.sha256(self.fingerprint.encode())
        for name in sorted(self.after):
            h.update(name.encode())
            h.update(self.after[name].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def metadata(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "method": self.method, "fingerprint": self.fingerprint,
                "config": self.config, "layers": self.layers, "neurons": [list(n) for n in self.neurons],
                "layer_origin": self.layer_origin, "requests": self.requests, "timings": self.timings,
                "notes": self.notes, "extra": self.extra, "parameters": self.names, "serving": self.serving}

    # ------------------------------------------------------------------ apply / revert
    def check_model(self, model, fingerprint: str | None = None,
                    fix: str = "load the model the edit was made on") -> None:
        """One line of error unless the edit was made on `model` (its fingerprint, or `fingerprint`: the
        unedited model's, for a model loaded from an edited copy); `fix` ends the message."""
        if (fingerprint or model.fingerprint) != self.fingerprint:
            raise KelocateError(
                f"this {self.method} edit was made on model {self.fingerprint}, not on {model.name} "
                f"({model.fingerprint}); {fix}")

    def _require_equal(self, model, expected: Mapping[str, torch.Tensor], why: str) -> None:
        for name, value in expected.items():
            param = weights.parameter(model, name)
            if param.shape != value.shape or not torch.equal(param.detach(), value.to(param.device)):
                raise KelocateError(f"{name} is not what this {self.method} edit expects: {why}")

    def _editor_class(self):
        """The editor class of this record's method (the registry's; imported on first use)."""
        from kelocate.edit.registry import editor_class

        return editor_class(self.method)

    def _require_serving(self, model, when: str, fix: str) -> None:
        """The model serves what this edit expects at `when` ('before' or 'after' it), else one line."""
        if self.serving is not None and self._editor_class().serving_state(model) != self.serving[when]:
            raise KelocateError(f"what the model serves beyond its weights is not what this {self.method} edit "
                                f"expects; {fix}")

    def _restore_serving(self, model, when: str) -> None:
        if self.serving is not None:
            self._editor_class().restore_serving_state(model, self.serving[when])

    @torch.no_grad()
    def revert(self, model=None, base_fingerprint: str | None = None) -> None:
        """Write the overwritten values back: those parameters become bit-identical to before the edit.

        `base_fingerprint`: the fingerprint of the unedited model, for a model loaded from an edited copy
        (whose own fingerprint is that of the edited weights); see `kelocate edit --revert`."""
        model = model if model is not None else self.model
        if model is None:
            raise KelocateError("this record is not applied to a model; pass the model: record.revert(model)")
        self.check_model(model, base_fingerprint)
        self._require_equal(model, self.after, "it changed since the edit was applied; revert later edits "
                                               "first (records stack: revert in reverse order)")
        self._require_serving(model, "after", "revert later edits first")
        weights.restore(model, self.before)
        self._restore_serving(model, "before")
        self.applied, self.model = False, None

    @torch.no_grad()
    def apply_to(self, model, base_fingerprint: str | None = None) -> EditRecord:
        """Write this edit's values into `model` (which must hold the weights it was made on)."""
        self.check_model(model, base_fingerprint)
        self._require_equal(model, self.before, "the model's weights differ from those the edit was made on; "
                                                "apply the records it was stacked on first, in order")
        self._require_serving(model, "before", "apply the records it was stacked on first, in order")
        weights.restore(model, self.after)
        self._restore_serving(model, "after")
        self.applied, self.model = True, model
        return self

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """One safetensors file: tensors 'before/<name>', 'after/<name>'; everything else as JSON metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            raise KelocateError(f"edit records are saved as .safetensors files, got {str(path)!r}; "
                                "name it e.g. edit.safetensors")
        tensors = {f"before/{n}": t.detach().cpu().contiguous() for n, t in self.before.items()}
        tensors |= {f"after/{n}": t.detach().cpu().contiguous() for n, t in self.after.items()}
        tensors |= {f"attachment/{n}": t.detach().cpu().contiguous() for n, t in self.attachments.items()}
        meta = {"kelocate": json.dumps(self.metadata())}
        return write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta),
                          fix="pass --save with a writable .safetensors path")

    @classmethod
    def load(cls, path: str | Path) -> EditRecord:
        """Read a record written by `save` (not applied to any model yet)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        path = Path(path)
        if not path.is_file():
            raise KelocateError(f"edit record {str(path)!r} does not exist; pass a file written by "
                                "`kelocate edit ... --save FILE`")
        try:
            with os_errors(path, fix="pass a readable record file", action="read"):
                with safe_open(str(path), "pt") as handle:
                    raw = (handle.metadata() or {}).get("kelocate")
                tensors = load_file(str(path))
            meta = json.loads(raw) if raw else {}
        except (SafetensorError, json.JSONDecodeError, OSError) as exc:
            raise KelocateError(f"{str(path)!r} is not a kelocate edit record ({exc}); pass a file written by "
                                "`kelocate edit ... --save FILE`") from None
        if meta.get("format") != FORMAT:
            raise KelocateError(f"{str(path)!r} is a safetensors file but not a kelocate edit record; pass a "
                                "file written by `kelocate edit ... --save FILE`")
        try:
            before = {n: tensors[f"before/{n}"] for n in meta["parameters"]}
            after = {n: tensors[f"after/{n}"] for n in meta["parameters"]}
            meta["method"], meta["fingerprint"]  # noqa: B018 (both must be there)
        except (KeyError, TypeError) as exc:
            raise KelocateError(f"{str(path)!r} is a damaged kelocate edit record (missing {exc}); save it again "
                                "with `kelocate edit ... --save FILE`") from None
        return cls(method=meta["method"], before=before, after=after, fingerprint=meta["fingerprint"],
                   config=meta.get("config", {}), layers=list(meta.get("layers", [])),
                   neurons=[tuple(n) for n in meta.get("neurons", [])], layer_origin=meta.get("layer_origin", {}),
                   requests=meta.get("requests", []), timings=meta.get("timings", {}), notes=meta.get("notes", []),
                   extra=meta.get("extra", {}), serving=_serving_of(meta),
                   attachments={k.removeprefix("attachment/"): v for k, v in tensors.items()
                                if k.startswith("attachment/")})


def _serving_of(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `serving` field of saved metadata; from the older fields in records written before it existed (an
    in-context text, a SERAC memory with its checkpoint)."""
    if "serving" in meta:
        return meta["serving"]
    if meta.get("context_after") is not None:
        return {"before": meta.get("context_before") or "", "after": meta["context_after"]}
    if meta.get("memory_after") is not None:
        checkpoint = (meta.get("extra") or {}).get("checkpoint")
        return {when: {"checkpoint": checkpoint, "memory": meta.get(f"memory_{when}") or []}
                if meta.get(f"memory_{when}") else None for when in ("before", "after")}
    return None


def revert_all(records: list[EditRecord]) -> None:
    """Revert stacked records in reverse order (the last applied first)."""
    for record in reversed(records):
        if record.applied:
            record.revert()


@contextmanager
def guarded_write(model, names: list[str], method: str) -> Iterator[dict[str, torch.Tensor]]:
    """Snapshot `names`, let the block write them in place, then check every written value is finite.

    On an exception inside the block, or non-finite weights after it, the snapshot is restored (the model
    is as before) and the error propagates. Yields the snapshot (the values the edit overwrites)."""
    snap = weights.snapshot(model, names)
    try:
        yield snap
    except BaseException:
        weights.restore(model, snap)
        raise
    bad = [n for n in names if not torch.isfinite(weights.parameter(model, n)).all()]
    if bad:
        weights.restore(model, snap)
        raise NonFiniteEditError(
            f"the {method} edit made {', '.join(bad)} non-finite (NaN or inf) and was rolled back; lower the "
            "learning rate or the update weight, or check the request")
