"""Inline display in notebooks: a result of a lower room (a trace, an edit record, a probe result) shows itself
through a view the notebook room registers here, so that no lower room imports the figures.

`TraceResult`, `EditRecord` and the probe results define `_repr_html_` as `display.html(kind, self)`; the views
are registered when `kelocate` is imported (`kelocate.notebook`). Without a view the object falls back to its
plain repr (None tells Jupyter so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

View = Callable[[Any], str]
_VIEWS: dict[str, View] = {}


def register(kind: str, view: View) -> None:
    """Show objects of `kind` inline with `view(obj) -> HTML`."""
    _VIEWS[kind] = view


def html(kind: str, obj: Any) -> str | None:
    """The inline HTML of `obj`, or None when no view of `kind` is registered."""
    view = _VIEWS.get(kind)
    return view(obj) if view is not None else None
