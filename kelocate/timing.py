"""Wall time per phase of an edit or an evaluation, for records and benchmarks.

Editors and metrics mark their phases (`with phase("target"): ...`); whoever wants the split opens a
`collecting()` block and reads the seconds per phase from the dict it yields. Outside such a block a phase
costs one context-variable lookup. A phase entered inside another counts towards the outer one only, so
the phases of one collection never overlap and their sum is at most the block's wall time.

The phase names in use: 'templates' (context prefixes), 'keys' (MLP keys), 'target' (target optimisation),
'statistics' (key second moments), 'update' (the closed-form write), 'training' (gradient steps of FT,
AdaLoRA), 'scoring' (teacher-forced scores), 'generation' (greedy replies), 'fluency' (sampled text).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_COLLECTOR: ContextVar[dict[str, float] | None] = ContextVar("kelocate_timing", default=None)
_INSIDE: ContextVar[bool] = ContextVar("kelocate_timing_inside", default=False)


@contextlib.contextmanager
def collecting() -> Iterator[dict[str, float]]:
    """Collect the seconds of every phase run inside the block: {name: seconds}, filled as phases end. A
    collection opened inside another (an edit's own, inside a benchmark's) adds its seconds to the outer one
    when it closes."""
    outer, counted = _COLLECTOR.get(), _INSIDE.get()  # counted: an outer phase already holds this time
    seconds: dict[str, float] = {}
    token, inside = _COLLECTOR.set(seconds), _INSIDE.set(False)
    try:
        yield seconds
    finally:
        _INSIDE.reset(inside)
        _COLLECTOR.reset(token)
        if outer is not None and not counted:
            for name, value in seconds.items():
                outer[name] = outer.get(name, 0.0) + value


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the block's wall time to phase `name` of the open collection (nothing when none is open, or when
    an outer phase is already counting)."""
    seconds = _COLLECTOR.get()
    if seconds is None or _INSIDE.get():
        yield
        return
    token = _INSIDE.set(True)
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        _INSIDE.reset(token)


def timed(name: str) -> Callable[[F], F]:
    """Decorator: every call of the function is phase `name`."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with phase(name):
                return fn(*args, **kwargs)
        return inner  # type: ignore[return-value]
    return wrap
