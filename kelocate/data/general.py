"""General-ability files: facts the model should keep recalling and held-out text it should keep predicting
(the comprehensive study's Table 5), for models other than the organism (whose sets come from its world:
`kelocate.organism.datasets.organism_general_set`). The measures are
`kelocate.studies.knowedit.general`'s.

Facts are JSON lines of `{prompt, answer}` (read as JSON lines whatever the file's name); texts are plain
text, one passage per non-blank line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kelocate.data.records import Record, field, obj, read_lines, read_text

FACTS_FORMAT = 'each line is one {"prompt": ..., "answer": ...} object'


@dataclass(frozen=True)
class GeneralSet:
    """Facts to recall (prompt, answer) and held-out texts to score."""

    facts: tuple[tuple[str, str], ...]
    texts: tuple[str, ...]


def _text(record: Record, value: dict, key: str) -> str:
    """A string field (a number is written out, as the file's author meant it)."""
    item = field(record, value, key, (str, int, float), hint=FACTS_FORMAT)
    return str(item)


def load_general_set(facts_file: str | Path | None, text_file: str | Path | None) -> GeneralSet:
    """A general set from files: JSONL {prompt, answer} facts and one text per line."""
    facts: list[tuple[str, str]] = []
    if facts_file is not None:
        for record in read_lines(facts_file, "general_facts file"):
            value = obj(record, FACTS_FORMAT)
            facts.append((_text(record, value, "prompt"), _text(record, value, "answer")))
    texts = ()
    if text_file is not None:
        texts = tuple(t for t in read_text(text_file, "general_text file").splitlines() if t.strip())
    return GeneralSet(tuple(facts), texts)
