"""Text corpora a user hands kelocate, e.g. for the editors' key statistics (`--corpus FILE`).

A `.jsonl` corpus holds one `{"text": ...}` object a line and is read through the one record reader
(`data/records.py`, so a bad line reads `FILE:LINE: text: PROBLEM`); any other file is plain text with one
document per non-blank line.
"""

from __future__ import annotations

import os
from pathlib import Path

from kelocate.data.records import JSONL, field, obj, read_lines, read_text

CORPUS_HINT = 'a .jsonl corpus holds one {"text": ...} object a line'


def read_corpus(path: str | os.PathLike) -> list[str]:
    """Texts of a corpus file: JSONL with a "text" field per line (.jsonl), else one document per line."""
    file = Path(path)
    if file.suffix.lower() != JSONL:
        return [line for line in read_text(file, "corpus file").splitlines() if line.strip()]
    return [field(record, obj(record, CORPUS_HINT), "text", hint=CORPUS_HINT) for record in
            read_lines(file, "corpus file")]
