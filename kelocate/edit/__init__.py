"""Editors that change weights where knowledge was located; every edit returns an `EditRecord` that
reverts bit-exactly. `editor(name)` builds one by its method name.

The machinery (base, record, request, config, registry, keys, target, losses, stats, covariance, training)
lives here; each method in `methods/`. Which methods exist and what each needs is `registry.py`'s
(`registry.METHODS`: method name -> `registry.Method`).

Imports: edit/ uses `kelocate.model`, `kelocate.data` (corpus files for the key statistics, training-edit
files for MEND and SERAC), `kelocate.errors` and `kelocate.atomic`, and nothing above it (no locator, study,
organism or command; `kelocate.locate_then_edit` wires locators to editors).
"""

from __future__ import annotations

from kelocate.edit.record import EditRecord, NonFiniteEditError
from kelocate.edit.registry import editor, editor_class
from kelocate.edit.request import EditRequest

__all__ = ["EditRecord", "EditRequest", "NonFiniteEditError", "editor", "editor_class"]
