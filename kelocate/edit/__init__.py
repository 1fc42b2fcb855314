"""Editors that change weights where knowledge was located; every edit returns an `EditRecord` that
reverts bit-exactly. `editor(name)` builds one by its method name."""

from __future__ import annotations

import importlib
from typing import Any

from kelocate.edit.record import EditRecord, NonFiniteEditError
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError

# method name -> (module, class); modules are imported on first use
EDITORS: dict[str, tuple[str, str]] = {
    "rome": ("kelocate.edit.methods.rome", "ROME"),
    "memit": ("kelocate.edit.methods.memit", "MEMIT"),
    "pmet": ("kelocate.edit.methods.pmet", "PMET"),
    "alphaedit": ("kelocate.edit.methods.alphaedit", "AlphaEdit"),
    "kn": ("kelocate.edit.methods.kn", "KN"),
    "ft-l": ("kelocate.edit.methods.ft", "FTL"),
    "ft-m": ("kelocate.edit.methods.ft", "FTM"),
    "ice": ("kelocate.edit.methods.ice", "ICE"),
    "ike": ("kelocate.edit.methods.ice", "IKE"),
    "adalora": ("kelocate.edit.methods.adalora", "AdaLoRA"),
    "mend": ("kelocate.edit.methods.mend", "MEND"),
    "serac": ("kelocate.edit.methods.serac", "SERAC"),
}


def editor_class(method: str):
    """The editor class of a method name (see `EDITORS`)."""
    key = method.lower()
    if key not in EDITORS:
        raise KelocateError(f"unknown edit method {method!r}; use one of {', '.join(EDITORS)}")
    module, name = EDITORS[key]
    return getattr(importlib.import_module(module), name)


def editor(method: str, **settings: Any):
    """An editor of `method` with hyper-parameter overrides (and `config_file=`, `corpus=` where used)."""
    return editor_class(method)(**settings)


__all__ = ["EDITORS", "EditRecord", "EditRequest", "NonFiniteEditError", "editor", "editor_class"]
