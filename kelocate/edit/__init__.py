"""Editors that change weights where knowledge was located; every edit returns an `EditRecord` that
reverts bit-exactly. `editor(name)` builds one by its method name.

The machinery (base, record, request, config, registry, keys, target, losses, stats, covariance, training)
lives here; each method in `methods/`. Which methods exist and what each needs is `registry.py`'s
(`EDITORS` is its table: method name -> `registry.Method`).
"""

from __future__ import annotations

from kelocate.edit.record import EditRecord, NonFiniteEditError
from kelocate.edit.registry import METHODS as EDITORS
from kelocate.edit.registry import editor, editor_class
from kelocate.edit.request import EditRequest

__all__ = ["EDITORS", "EditRecord", "EditRequest", "NonFiniteEditError", "editor", "editor_class"]
