"""Shared CLI plumbing: one-line errors with exit code 2, model loading, consoles, and the option parsers
more than one command reads (`parse_layers`, `parse_fact`, `parse_names`, `parse_trained`), so that no
command imports another."""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from kelocate.errors import KelocateError

console = Console()
err_console = Console(stderr=True)
SEPARATOR = "=>"  # between the prompt and the answer of a fact given on the command line (`parse_fact`)

# file-system errors a user can fix (path, permission, space); any other OSError keeps its traceback
FS_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM,
                       errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.ENOTEMPTY})


def fail(message: str) -> None:
    """Print one line of error and exit with code 2."""
    line = " ".join(part.strip() for part in str(message).splitlines())  # one line, whatever it holds
    err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def os_error_line(exc: OSError) -> str:
    """One line for a file-system error that escaped the atomic writers: what, where and the fix."""
    where = f" {str(exc.filename)!r}" if exc.filename is not None else ""
    return (f"cannot access{where} ({exc.strerror or type(exc).__name__}); check the path, its permissions "
            "and the free space, or choose another --out")


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a user mistake raised by a command into one line and exit code 2.

    A KelocateError is a user mistake by definition; a file-system OSError (missing folder, permission,
    read-only, disk full) is a backstop for writes that did not go through kelocate.atomic.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KelocateError as exc:
            fail(str(exc))
        except OSError as exc:
            if exc.errno not in FS_ERRNOS:
                raise
            fail(os_error_line(exc))

    return wrapper


def load(model: str | None, device: str | None = None, dtype: str | None = None):
    """Load the model a command asked for (None = the organism), with a status spinner."""
    from kelocate.loading import load_model

    with err_console.status(f"loading {model or 'the model organism'} ..."):
        return load_model(model, device=device, dtype=dtype)


def parse_layers(spec: str) -> list[int] | None:
    """'1,2,3', '1-4' (inclusive), '0,2-3' or 'all' (None) -> layer numbers, checked against the model later."""
    text = spec.strip().lower()
    if text == "all":
        return None
    layers: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            lo = int(first)
            hi = int(last) if dash else lo
        except ValueError:
            raise KelocateError(f"--layers {spec!r} is not a layer list; write e.g. 1,2,3 or 1-4 or all") from None
        if hi < lo:
            raise KelocateError(f"--layers range {part.strip()!r} runs backwards; write it low-high, e.g. 1-4")
        layers += range(lo, hi + 1)
    return list(dict.fromkeys(layers))


def parse_fact(text: str, option: str) -> tuple[str, str]:
    """'PROMPT=>ANSWER' -> (prompt, answer); a mistake is one line naming the option."""
    prompt, sep, answer = text.rpartition(SEPARATOR)
    if not sep or not prompt.strip() or not answer.strip():
        raise KelocateError(f"{option} {text!r} is not PROMPT{SEPARATOR}ANSWER; write e.g. "
                            f"{option} 'The capital of France is{SEPARATOR}Paris'")
    return prompt.strip(), answer.strip()


def parse_names(text: str) -> tuple[str, ...]:
    """'rome, memit' -> ('rome', 'memit'); '' or 'none' -> ()."""
    items = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    return () if items == ("none",) else items


def parse_trained(items: list[str]) -> dict[str, dict[str, str]]:
    """['mend=DIR'] -> {'mend': {'trained': 'DIR'}} (a bare DIR is MEND's): the editors' settings."""
    out = {}
    for item in items:
        method, sep, folder = item.partition("=")
        if not sep:
            method, folder = "mend", item
        if not folder:
            raise KelocateError(f"--trained {item!r}: pass METHOD=DIR, e.g. --trained mend=kelocate_out/train/mend")
        out[method.strip().lower()] = {"trained": folder}
    return out


def check_facts_file(path: Path | None) -> None:
    """One line of error for a --facts-file that is not a file (checked before a model loads)."""
    if path is not None and not path.is_file():
        raise KelocateError(f"--facts-file {str(path)!r} is not a file; pass a KnowEdit or CounterFact file")
