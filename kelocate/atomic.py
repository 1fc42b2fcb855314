"""Atomic writes of files and folders, the on-disk cache folder, and one-line errors when writing fails.

A file is written to a temporary name in its destination folder and renamed into place; a folder is
built under a temporary name and renamed (or its files moved) into place at the end. So a crash or a user
error never leaves a half-written result behind (DESIGN.md sections 6 and 7). An OSError met while writing
(cannot create the folder, permission denied, read-only file system, disk full) becomes a `WriteError`: a
one-line `KelocateError` naming the path and the fix, which the CLI prints without a traceback.

Disk caches (the noise scale of causal tracing, second-moment statistics, the organism's exported data
sets) share one keying scheme: a key is a mapping of everything the entry depends on; `keyed_path` names the
entry by a hash of the key's canonical JSON (`key_text`) under `cache_dir(kind)`, the entry stores the key
itself, and its reader checks it (`same_key`), so a hash collision or a foreign file is a miss, never a
wrong number.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from kelocate.errors import KelocateError

OUT_FIX = "choose another --out (a writable folder with free space)"
CACHE_FIX = "set KELOCATE_CACHE to a writable folder with free space"

PathLike = str | os.PathLike


class WriteError(KelocateError):
    """A file or folder could not be written (no such folder, permission, read-only, disk full)."""


def write_error(path: PathLike, exc: OSError, fix: str = OUT_FIX, action: str = "write") -> WriteError:
    """The one-line error for `exc`, met while writing `path`: what failed, where, and `fix`.

    The file the OSError names is added when it is another one, unless it is one of our temporary names.
    """
    reason = exc.strerror or type(exc).__name__
    other = exc.filename is not None and str(exc.filename) != str(path)
    if other and not Path(str(exc.filename)).name.endswith(".tmp"):
        reason += f" at {str(exc.filename)!r}"
    return WriteError(f"cannot {action} {str(path)!r} ({reason}); {fix}")


@contextlib.contextmanager
def os_errors(path: PathLike, fix: str = OUT_FIX, action: str = "write") -> Iterator[None]:
    """Turn an OSError raised inside the block into a `WriteError` naming `path` and `fix`."""
    try:
        yield
    except OSError as exc:
        raise write_error(path, exc, fix, action) from exc


def make_dirs(path: PathLike) -> list[Path]:
    """Create `path` and its missing parents; return the folders created, outermost first (OSError raises)."""
    folder = Path(path)
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    created = []
    for p in missing:
        try:
            p.mkdir()
        except FileExistsError:  # created meanwhile by someone else: fine when it is a folder
            if not p.is_dir():
                raise
            continue
        created.append(p)
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders `make_dirs` created (innermost first), each only if still empty."""
    for p in reversed(folders):
        with contextlib.suppress(OSError):
            p.rmdir()


@contextlib.contextmanager
def _new_dirs(folder: Path, fix: str) -> Iterator[list[Path]]:
    """Create `folder` and its missing parents; remove those again (if empty) when the block fails."""
    with os_errors(folder, fix, "create folder"):
        created = make_dirs(folder)
    try:
        yield created
    except BaseException:
        _remove_empty(created)
        raise


def _fresh(parent: Path, name: str, make: Callable[[Path], None]) -> Path:
    """Create a new hidden temporary entry `.NAME.<random>.tmp` in `parent` with `make`; return its path."""
    for _ in range(100):
        candidate = parent / f".{name[:100]}.{secrets.token_hex(4)}.tmp"
        try:
            make(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(parent))


def _new_file(path: Path) -> None:
    """Create an empty file; mode 0o666 less the umask, like any file a program opens for writing."""
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


def _new_dir(path: Path) -> None:
    """Create an empty folder; mode 0o777 less the umask, like `mkdir`."""
    path.mkdir(0o777)


def _remove(path: Path) -> None:
    """Delete a file or a folder tree, ignoring errors (clean-up only)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def cache_dir(*parts: str) -> Path:
    """kelocate's cache folder (``$KELOCATE_CACHE`` or ``~/.cache/kelocate``), with optional sub-folders."""
    root = os.environ.get("KELOCATE_CACHE") or Path.home() / ".cache" / "kelocate"
    path = Path(root).expanduser().joinpath(*parts)
    with os_errors(path, CACHE_FIX, "create folder"):
        path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------- keyed cache entries
KEY_FILE = "key.json"  # the key of a cache entry that is a folder, written inside it


def key_text(key: Mapping[str, Any]) -> str:
    """The canonical text of a cache key: JSON with sorted keys and no spaces. It is what `keyed_path` hashes
    and what an entry stores (inside the file, or as `KEY_FILE` in a folder) for its reader to compare.

    Values must be JSON values (str, int, float, bool, None, lists, mappings): name a model by its
    fingerprint, a file by its size and time, a dtype by its name. Anything else is a TypeError.
    """
    return json.dumps(dict(key), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def keyed_path(kind: str, key: Mapping[str, Any], suffix: str = "", label: str = "",
               root: PathLike | None = None) -> Path:
    """Where the cache entry of `kind` for `key` lives: ``<root>/[<label>-]<digest><suffix>``.

    root: `cache_dir(kind)` unless given (a folder the user chose instead); digest: the first 24 hex digits of
    the SHA-256 of `key_text(key)`, so every setting in the key is part of the name and a change in any of
    them is a miss; suffix: '.json', '.safetensors', or '' for a folder; label: a readable prefix
    ('layer003'). The folder is created; the entry is not. Write the entry atomically (`write_text`,
    `atomic_path`, `atomic_dir`) with its key inside, and let the reader check it with `same_key`: a hash
    names the entry, the stored key proves it.
    """
    digest = hashlib.sha256(key_text(key).encode()).hexdigest()[:24]
    if root is None:
        folder = cache_dir(kind)
    else:
        folder = Path(root)
        with os_errors(folder, CACHE_FIX, "create folder"):
            folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{label + '-' if label else ''}{digest}{suffix}"


def same_key(stored: str | Mapping[str, Any] | None, key: Mapping[str, Any]) -> bool:
    """Whether a key read back from a cache entry (its text, or the parsed mapping) is `key`.

    Compared as JSON values, so a tuple written and a list read back agree; an unreadable key is no match.
    """
    if stored is None:
        return False
    try:
        got = json.loads(stored) if isinstance(stored, str) else json.loads(key_text(stored))
    except (TypeError, ValueError):
        return False
    return got == json.loads(key_text(key))


def check_writable(folder: PathLike, fix: str = OUT_FIX) -> None:
    """Fail now with a `WriteError` if files cannot be created in `folder`; leaves nothing behind.

    Commands call it before long work, so that a bad --out is reported at once, not after the computation.
    """
    path = Path(folder)
    created: list[Path] = []
    try:
        with os_errors(path, fix, "create folder"):
            created = make_dirs(path)
        with os_errors(path, fix, "write in folder"):
            probe = _fresh(path, "kelocate-probe", _new_file)
            probe.unlink()
    finally:
        _remove_empty(created)


@contextlib.contextmanager
def _staged(dest: Path, make: Callable[[Path], None], finish: Callable[[Path], None], fix: str) -> Iterator[Path]:
    """Yield a fresh temporary entry beside `dest` (made by `make`); `finish(tmp)` puts it in place on
    success; whatever is left of it is removed either way, and OSErrors become one-line WriteErrors."""
    with _new_dirs(dest.parent, fix):
        with os_errors(dest, fix):
            tmp = _fresh(dest.parent, dest.name, make)
        try:
            with os_errors(dest, fix):
                yield tmp
                finish(tmp)
        finally:
            _remove(tmp)


@contextlib.contextmanager
def atomic_path(path: PathLike, fix: str = OUT_FIX) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on error removed."""
    dest = Path(path)
    with _staged(dest, _new_file, lambda tmp: os.replace(tmp, dest), fix) as tmp:
        yield tmp


def write_text(path: PathLike, text: str, fix: str = OUT_FIX) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path, fix) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_with(path: PathLike, writer: Callable[[Path], None], fix: str = OUT_FIX) -> Path:
    """Let `writer(tmp_path)` write the file, then move it to `path` atomically."""
    with atomic_path(path, fix) as tmp:
        writer(tmp)
    return Path(path)


def _swap_in(tmp: Path, dest: Path, replace: bool) -> None:
    """Rename the finished folder `tmp` to `dest`; an existing `dest` is replaced, or kept if not `replace`."""
    if dest.exists() or dest.is_symlink():
        if not replace:
            return
        old = dest.with_name(f".{dest.name[:100]}.{secrets.token_hex(4)}.old")
        dest.rename(old)
        try:
            tmp.rename(dest)
        except OSError:
            old.rename(dest)  # put the previous one back
            raise
        _remove(old)
        return
    try:
        tmp.rename(dest)
    except OSError:
        if replace or not dest.is_dir():
            raise  # else: another writer finished first, and its folder is kept


@contextlib.contextmanager
def atomic_dir(path: PathLike, *, replace: bool = True, fix: str = OUT_FIX) -> Iterator[Path]:
    """Yield a new empty folder beside `path`; on success it becomes `path`, on error it is removed.

    An existing `path` is replaced (for a checkpoint), or kept and the new folder discarded when
    `replace` is False (a cache entry that another process wrote meanwhile).
    """
    dest = Path(path)
    with _staged(dest, _new_dir, lambda tmp: _swap_in(tmp, dest, replace), fix) as tmp:
        yield tmp


def _merge(src: Path, dest: Path) -> None:
    """Move every file under `src` to the same relative place under `dest` (folders created as needed)."""
    for root, _dirs, files in os.walk(src):
        target = dest / Path(root).relative_to(src)
        target.mkdir(exist_ok=True)
        for name in files:
            os.replace(Path(root) / name, target / name)


@contextlib.contextmanager
def atomic_files(path: PathLike, fix: str = OUT_FIX) -> Iterator[Path]:
    """Yield a temporary folder; on success every file written under it moves to the same place in `path`.

    For many files written into a folder that may hold other things (an export into --out): nothing
    appears until all of them are written, files already there and not rewritten are kept, and on error
    nothing is left (not even the folders created for `path`).
    """
    dest = Path(path)
    with _new_dirs(dest, fix):
        with os_errors(dest, fix, "write in folder"):
            tmp = _fresh(dest, "kelocate-staging", _new_dir)
        try:
            with os_errors(dest, fix):
                yield tmp
                _merge(tmp, dest)
        finally:
            _remove(tmp)
