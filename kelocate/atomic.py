"""Atomic file writes and the on-disk cache folder.

A file is written to a temporary name in its destination folder and renamed into place, so a crash or a
user error never leaves a half-written result behind (DESIGN.md sections 6 and 7).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """kelocate's cache folder (``$KELOCATE_CACHE`` or ``~/.cache/kelocate``), with optional sub-folders."""
    root = os.environ.get("KELOCATE_CACHE") or Path.home() / ".cache" / "kelocate"
    path = Path(root).expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on error removed."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Let `writer(tmp_path)` write the file, then move it to `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)
