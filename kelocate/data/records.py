"""The one reader of JSON and JSON-lines record files, and the one error format for a malformed record.

Every reader of a user's data file (KnowEdit and CounterFact task files, KLoB files, fact files, training
edits, general-ability facts) reads through here, so every file is decoded, split and located the same way,
and every mistake in it reads the same, as one line:

    FILE:RECORD: FIELD: PROBLEM; what a record should look like

RECORD says where the record is: `:LINE` (1-based) in a JSON-lines file, `[INDEX]` (0-based, as a JSON path)
in a JSON list, nothing for a file that is one JSON object. FIELD is the field's path inside the record
(`portability.Reasoning[0].prompt`), left out when the record as a whole is wrong. So:

    facts.jsonl:3: answer: must be a string, got a number
    train.json[2]: subject: missing; each edit looks like {"prompt": ..., "subject": ..., "target_new": ...}
    KLoB-u.jsonl:7: not valid JSON (Expecting value); each line must be one JSON value

A syntax error in a JSON document names the line and column where the parser stopped instead:
`cf.json: not valid JSON (line 3, column 5: Expecting value)`. Lines are split on "\\n" only (as a file is
iterated; `str.splitlines` would also split inside a JSON string holding U+2028); blank lines are skipped
but counted. A reader that must choose which lines count (the study's results store leaves out a line
torn by a kill) reads the file itself and hands the lines it keeps to `parse_lines`, so its errors read
the same. A missing file is one line too, ending in the caller's `fix` (which option to pass, what the
file should hold), so no reader checks for the file before reading it.

The checks are small typed getters (`field`, `strings`) rather than a validation library: the formats are
the public data sets' own, with alternative spellings, alias lists and blanks to strip, and a library's
multi-line error reports would have to be rewritten into the one line above anyway.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kelocate.errors import KelocateError

JSONL = ".jsonl"


class RecordError(KelocateError):
    """A malformed record: `FILE:RECORD: FIELD: PROBLEM; HINT` (one line)."""

    def __init__(self, where: str, field: str | None, problem: str, hint: str | None = None) -> None:
        self.where, self.field, self.problem, self.hint = where, field, problem, hint
        text = f"{where}: {field}: {problem}" if field else f"{where}: {problem}"
        super().__init__(text + (f"; {hint}" if hint else ""))


@dataclass(frozen=True)
class Record:
    """One record of a file: its parsed JSON `value` and where it is (`locator`: ':LINE', '[INDEX]' or '')."""

    path: Path
    locator: str
    index: int  # position among the file's records, 0-based
    value: Any

    @property
    def where(self) -> str:
        """The record's place for error messages: the path as given, then the locator."""
        return f"{self.path}{self.locator}"

    @property
    def label(self) -> str:
        """The record's place with the file name only, for tables and result files."""
        return f"{self.path.name}{self.locator}"

    def error(self, field: str | None, problem: str, hint: str | None = None) -> RecordError:
        """The error for a problem with `field` of this record (None: the record as a whole)."""
        return RecordError(self.where, field, problem, hint)


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages ('a string', 'a number', 'a list', ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# ---------------------------------------------------------------------- reading
def read_text(path: str | os.PathLike, what: str = "data file", fix: str | None = None) -> str:
    """A file's UTF-8 text; a missing file or another encoding is one line of error.

    `fix` is what the user should do about a missing file, in the caller's words (which option to pass, what
    the file holds); the default says to pass an existing file.
    """
    p = Path(path)
    if not p.is_file():
        raise KelocateError(f"{what} {str(p)!r} does not exist; {fix or 'pass an existing file'}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise KelocateError(f"{p}: not UTF-8 text ({exc.reason}); save the {what} as UTF-8") from None
    except OSError as exc:
        raise KelocateError(f"cannot read {what} {str(p)!r} ({exc.strerror or exc}); pass a readable file") from None


def read_json(path: str | os.PathLike, what: str = "data file", fix: str | None = None) -> Any:
    """One JSON document; a syntax error names the line and column where the parser stopped (`fix`: as for
    `read_text`)."""
    p = Path(path)
    text = read_text(p, what, fix)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise KelocateError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); fix the "
                            f"{what}") from None


def read_lines(path: str | os.PathLike, what: str = "data file", fix: str | None = None) -> list[Record]:
    """Every non-blank line of a JSON-lines file as a Record (locator ':LINE'; `fix`: as for `read_text`)."""
    p = Path(path)
    return parse_lines(enumerate(read_text(p, what, fix).split("\n"), 1), p)


LINE_HINT = "each line must be one JSON value"


def parse_lines(numbered: Iterable[tuple[int, str | bytes]], path: str | os.PathLike,
                hint: str = LINE_HINT) -> list[Record]:
    """Records of JSON lines already read, each with its 1-based line number; blank lines are skipped.

    For a caller that reads the file itself because it decides which lines count (the study's results
    store leaves out a torn last line); `hint` ends the error for a line that is not JSON. Bytes are
    decoded as JSON does (UTF-8); a line in another encoding is an error naming it too.
    """
    p = Path(path)
    out = []
    for number, line in numbered:
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{p}:{number}", None, f"not valid JSON ({exc.msg})", hint) from None
        except UnicodeDecodeError as exc:
            raise RecordError(f"{p}:{number}", None, f"not UTF-8 text ({exc.reason})", hint) from None
        out.append(Record(p, f":{number}", len(out), value))
    return out


def records_of(document: Any, path: str | os.PathLike) -> list[Record]:
    """The records of a parsed JSON document: each item of a list (locator '[INDEX]'), else the document."""
    p = Path(path)
    if isinstance(document, list):
        return [Record(p, f"[{i}]", i, value) for i, value in enumerate(document)]
    return [Record(p, "", 0, document)]


def read_records(path: str | os.PathLike, what: str = "data file", lines: bool | None = None,
                 fix: str | None = None) -> list[Record]:
    """The records of a JSON-lines file (one a line) or of a JSON file (a list of them, or one object).

    `lines`: read as JSON lines whatever the name (True), as one JSON document (False), or by the suffix
    (None: '.jsonl' is JSON lines). `fix`: what to do about a missing file, as for `read_text`.
    """
    p = Path(path)
    if lines if lines is not None else p.suffix.lower() == JSONL:
        return read_lines(p, what, fix)
    return records_of(read_json(p, what, fix), p)


# ---------------------------------------------------------------------- fields
_MISSING = object()


def obj(record: Record, hint: str | None = None) -> dict:
    """The record's value, which must be a JSON object."""
    if not isinstance(record.value, dict):
        raise record.error(None, f"must be a JSON object, got {json_type(record.value)}", hint)
    return record.value


def field(record: Record, value: Mapping, key: str | Sequence[str], kind: type | tuple[type, ...] = str, *,
          default: Any = _MISSING, path: str = "", hint: str | None = None) -> Any:
    """`value[key]` (the first of several spellings that is present), checked to be of `kind`.

    Missing: `default` when one is given, else an error; present but None counts as missing. `path` is the
    field path of `value` inside the record ('portability.Reasoning[0]'), for the message.
    """
    keys = [key] if isinstance(key, str) else list(key)
    name = f"{path}.{keys[0]}" if path else keys[0]
    found = next((k for k in keys if k in value and value[k] is not None), None)
    if found is None:
        if default is not _MISSING:
            return default
        raise record.error(name, "missing", hint)
    item = value[found]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(item, kinds) or (bool not in kinds and isinstance(item, bool)):
        wanted = " or ".join(dict.fromkeys(_NAMES.get(k, k.__name__) for k in kinds))
        raise record.error(name, f"must be {wanted}, got {json_type(item)}", hint)
    return item


_NAMES: dict[type, str] = {str: "a string", int: "a number", float: "a number", list: "a list", dict: "an object",
                           bool: "true/false"}


def nonempty(record: Record, value: Mapping, key: str | Sequence[str], *, default: Any = _MISSING, path: str = "",
             hint: str | None = None) -> Any:
    """A string field that must hold more than blanks (returned as it is: callers decide about stripping)."""
    item = field(record, value, key, str, default=default, path=path, hint=hint)
    if isinstance(item, str) and not item.strip():
        if default is not _MISSING:
            return default
        keys = [key] if isinstance(key, str) else list(key)
        raise record.error(f"{path}.{keys[0]}" if path else keys[0], "is empty", hint)
    return item


def strings(record: Record, value: Any, name: str, n: int | None = None, hint: str | None = None,
            strip: bool = True) -> list[str]:
    """A list of non-empty strings (of exactly `n` items when given), stripped unless `strip` is False
    (a prompt's blanks matter to its tokens)."""
    if not isinstance(value, list):
        raise record.error(name, f"must be a list of strings, got {json_type(value)}", hint)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            got = "an empty string" if isinstance(item, str) else json_type(item)
            raise record.error(f"{name}[{i}]", f"must be a non-empty string, got {got}", hint)
    if n is not None and len(value) != n:
        raise record.error(name, f"must have {n} items, found {len(value)}", hint)
    return [v.strip() for v in value] if strip else list(value)
