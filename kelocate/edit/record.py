"""`EditRecord`: what an edit overwrote and what it wrote, so that it can be undone bit for bit.

Per parameter (HF name) the record keeps the values it overwrote (`before`) and the values it wrote
(`after`). Reverting writes `before` back, which is bit-exact (subtracting a delta in float is not).
Records stack: revert them in reverse order; a record refuses to revert weights that changed since it
was applied (a later edit still in place) and to apply onto weights that are not the ones it was made
on. `save` writes one safetensors file (tensors `before/<name>`, `after/<name>`, the rest as JSON
metadata); `EditRecord.load(path).apply_to(model)` refuses a model with another fingerprint.
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
    # in-context editors (ICE, IKE) change the text put before every prompt instead of weights
    context_before: str | None = None
    context_after: str | None = None
    attachments: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. AdaLoRA's trained adapter
    # a served editor's memory (SERAC) before and after the edit, as request dicts
    memory_before: list[dict] | None = None
    memory_after: list[dict] | None = None
    applied: bool = False
    model: Any = field(default=None, repr=False, compare=False)  # the model it is applied to, if any

    # ------------------------------------------------------------------ facts
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
                "notes": self.notes, "extra": self.extra, "parameters": self.names,
                "context_before": self.context_before, "context_after": self.context_after,
                "memory_before": self.memory_before, "memory_after": self.memory_after}

    # ------------------------------------------------------------------ apply / revert
    def _check_model(self, model, fingerprint: str | None = None) -> None:
        if (fingerprint or model.fingerprint) != self.fingerprint:
            raise KelocateError(
                f"this {self.method} edit was made on model {self.fingerprint}, not on {model.name} "
                f"({model.fingerprint}); load the model the edit was made on")

    def _require_equal(self, model, expected: Mapping[str, torch.Tensor], why: str) -> None:
        for name, value in expected.items():
            param = weights.parameter(model, name)
            if param.shape != value.shape or not torch.equal(param.detach(), value.to(param.device)):
                raise KelocateError(f"{name} is not what this {self.method} edit expects: {why}")

    def _require_context(self, model, expected: str | None, fix: str) -> None:
        if expected is not None and model.context != expected:
            raise KelocateError(f"the model's in-context text is not what this {self.method} edit expects; {fix}")

    def _require_memory(self, model, expected: list[dict] | None, fix: str) -> None:
        if expected is None:
            return
        from kelocate.edit.methods.serac import memory_of

        if memory_of(model) != expected:
            raise KelocateError(f"the model's SERAC memory is not what this {self.method} edit expects; {fix}")

    def _set_memory(self, model, memory: list[dict] | None) -> None:
        from kelocate.edit.methods.serac import set_memory

        if memory is not None:
            set_memory(model, memory, self.extra.get("checkpoint"))

    @torch.no_grad()
    def revert(self, model=None, base_fingerprint: str | None = None) -> None:
        """Write the overwritten values back: those parameters become bit-identical to before the edit.

        `base_fingerprint`: the fingerprint of the unedited model, for a model loaded from an edited copy
        (whose own fingerprint is that of the edited weights); see `kelocate edit --revert`."""
        model = model if model is not None else self.model
        if model is None:
            raise KelocateError("this record is not applied to a model; pass the model: record.revert(model)")
        self._check_model(model, base_fingerprint)
        self._require_equal(model, self.after, "it changed since the edit was applied; revert later edits "
                                               "first (records stack: revert in reverse order)")
        self._require_context(model, self.context_after, "revert later edits first")
        self._require_memory(model, self.memory_after, "revert later edits first")
        weights.restore(model, self.before)
        if self.context_before is not None:
            model.context = self.context_before
        self._set_memory(model, self.memory_before)
        self.applied, self.model = False, None

    @torch.no_grad()
    def apply_to(self, model, base_fingerprint: str | None = None) -> EditRecord:
        """Write this edit's values into `model` (which must hold the weights it was made on)."""
        self._check_model(model, base_fingerprint)
        self._require_equal(model, self.before, "the model's weights differ from those the edit was made on; "
                                                "apply the records it was stacked on first, in order")
        self._require_context(model, self.context_before, "apply the records it was stacked on first, in order")
        self._require_memory(model, self.memory_before, "apply the records it was stacked on first, in order")
        weights.restore(model, self.after)
        if self.context_after is not None:
            model.context = self.context_after
        self._set_memory(model, self.memory_after)
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
                   extra=meta.get("extra", {}), context_before=meta.get("context_before"),
                   context_after=meta.get("context_after"), memory_before=meta.get("memory_before"),
                   memory_after=meta.get("memory_after"),
                   attachments={k.removeprefix("attachment/"): v for k, v in tensors.items()
                                if k.startswith("attachment/")})


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
