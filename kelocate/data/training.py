"""Training-edit files: the edits MEND and SERAC learn from, and IKE's demonstration pool.

A training file is either kelocate's plain list of edits (a JSON list, or JSON lines), each

    {"prompt": ..., "subject": ..., "target_new": ..., "ground_truth"?: ..., "paraphrases"?: [...],
     "unrelated"?: [prompts], "neighbours"?: [[prompt, answer], ...]}

(`neighbours`: prompts whose answers must not change, e.g. the subject's other facts; `unrelated`: prompts
for the locality losses), or a KnowEdit task file (any of the six, or ROME's CounterFact), whose cases
become edits with their locality probes as neighbours.

The reader returns `TrainingRecord`s, plain data: `data/` reads files and knows no editor, so turning a
record into the editors' `kelocate.edit.training.TrainingEdit` is the caller's one line
(`kelocate.edit.training.read_training_edits` does it).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kelocate.data.knowedit import EditCase, KnowEditSkipWarning, parse_knowedit
from kelocate.data.records import (
    JSONL,
    Record,
    field,
    json_type,
    nonempty,
    obj,
    read_json,
    read_lines,
    records_of,
    strings,
)
from kelocate.errors import KelocateError

EDIT_FORMAT = ('each edit looks like {"prompt": ..., "subject": "words of the prompt", "target_new": ..., '
               '"ground_truth"?: ..., "paraphrases"?: [...], "unrelated"?: [...], "neighbours"?: [[prompt, answer]]}')
# fields only KnowEdit (and CounterFact) records have
KNOWEDIT_KEYS = {"locality", "portability", "rephrase_prompt", "requested_rewrite", "labels", "ent"}


@dataclass(frozen=True)
class TrainingRecord:
    """One training edit as a file states it: the edit (prompt, subject, target_new, ground_truth and the
    prompt's paraphrases), prompts whose answers must not change (`neighbours`, with those answers) and
    unrelated prompts; `source` is where it came from."""

    prompt: str
    subject: str
    target_new: str
    ground_truth: str | None = None
    paraphrases: tuple[str, ...] = ()
    unrelated: tuple[str, ...] = ()
    neighbours: tuple[tuple[str, str], ...] = ()
    source: str = ""


def is_knowedit(rows: Any) -> bool:
    """A KnowEdit task file (or ROME's CounterFact) rather than kelocate's plain edit list."""
    if isinstance(rows, dict):
        return bool({"K_F", "K_R", "success"} & set(rows))
    return isinstance(rows, list) and any(isinstance(r, dict) and KNOWEDIT_KEYS & set(r) for r in rows[:20])


def case_record(case: EditCase) -> TrainingRecord:
    """A KnowEdit case as a training edit: its edit, with its locality probes as neighbours."""
    return TrainingRecord(case.prompt, case.edit_subject, case.target_new, case.ground_truth, case.paraphrase_prompts,
                          (), tuple((p.prompt, p.ground_truth) for probes in case.locality.values() for p in probes),
                          case.label)


def _plain(record: Record) -> TrainingRecord:
    value = obj(record, EDIT_FORMAT)
    prompt = nonempty(record, value, "prompt", hint=EDIT_FORMAT)
    subject = nonempty(record, value, "subject", hint=EDIT_FORMAT)
    target = nonempty(record, value, "target_new", hint=EDIT_FORMAT)
    if subject not in prompt:
        raise record.error("subject", f"{subject!r} does not occur in the prompt {prompt!r}", EDIT_FORMAT)
    truth = field(record, value, "ground_truth", default=None, hint=EDIT_FORMAT)
    lists = {key: strings(record, field(record, value, key, list, default=[], hint=EDIT_FORMAT), key, hint=EDIT_FORMAT,
                          strip=False) for key in ("paraphrases", "unrelated")}
    neighbours = field(record, value, "neighbours", list, default=[], hint=EDIT_FORMAT)
    for i, pair in enumerate(neighbours):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise record.error(f"neighbours[{i}]", f"must be a [prompt, answer] pair of strings, got "
                               f"{json_type(pair)}", EDIT_FORMAT)
    return TrainingRecord(prompt, subject, target, truth, tuple(lists["paraphrases"]), tuple(lists["unrelated"]),
                          tuple((p, a) for p, a in neighbours), record.label)


def read_training_file(path: str | os.PathLike, option: str = "--data") -> list[TrainingRecord]:
    """The training edits of a plain edit list (.json list or .jsonl) or of a KnowEdit task file.

    `option` names where the path came from in the error for a missing file (`--data`, `--pool`).
    """
    p = Path(path)
    fix = f"pass {option} a JSON or JSONL file of edits"
    if p.suffix.lower() == JSONL:
        records = read_lines(p, "training file", fix)
        document: Any = [r.value for r in records]
    else:
        document = read_json(p, "training file", fix)
        records = None
    if is_knowedit(document):
        with warnings.catch_warnings():  # records whose subject is not in their prompt are left out
            warnings.simplefilter("ignore", KnowEditSkipWarning)
            return [case_record(c) for c in parse_knowedit(document, p)]
    if not isinstance(document, list):
        raise KelocateError(f"{p}: must hold a list of edits, got {json_type(document)}; {EDIT_FORMAT}")
    return [_plain(r) for r in (records if records is not None else records_of(document, p))]
