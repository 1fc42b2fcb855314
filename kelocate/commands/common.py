"""Shared CLI plumbing: one-line errors with exit code 2, model loading, consoles."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from kelocate.errors import KelocateError

console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> None:
    """Print one line of error and exit with code 2."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a KelocateError (a user mistake) raised by a command into one line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KelocateError as exc:
            fail(str(exc))

    return wrapper


def load(model: str | None, device: str | None = None, dtype: str | None = None):
    """Load the model a command asked for (None = the organism), with a status spinner."""
    from kelocate.loading import load_model

    with err_console.status(f"loading {model or 'the model organism'} ..."):
        return load_model(model, device=device, dtype=dtype)
