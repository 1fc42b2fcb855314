"""The one `Fact` type, and the readers of fact files: what tracing averages over and what the
knowledge-neuron specificity check takes its control facts from.

A `Fact` is a prompt the model should continue with `answer` (None: with its own top token), the words of
the prompt that name its `subject`, optionally its `relation`, and `source`, where it came from
(`facts.jsonl:3`, `cf.json[12]`, `organism:capital`). The averaging of causal traces
(`locate/causal_trace/average.py`) reads such facts and never a file; the organism's facts are made by
`kelocate.organism.datasets`.

Fact files are JSON lists (.json) or JSON lines (.jsonl) of plain `{prompt, subject, answer?, relation?}`
records; `file_facts` also takes a KLoB-c file (each paraphrase a fact) or a KnowEdit task file (the
answer is the ground truth when it has one). Records are read by the one record reader (`data/records.py`),
so a malformed one is one line `FILE:RECORD: FIELD: PROBLEM; ...`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from kelocate.data.klob import load_klob_c
from kelocate.data.knowedit import KnowEditSkipWarning, load_knowedit
from kelocate.data.records import Record, field, nonempty, obj, read_records
from kelocate.errors import KelocateError

PLAIN_FORMAT = '{"prompt": "... text before the answer", "subject": "words of the prompt", "answer": "optional"}'
CONTROL_FORMAT = '{"prompt": ..., "answer": ..., "subject": ..., "relation": ...}'
# fields of the other formats: a record holding one is not a plain fact
OTHER_FIELDS = {"target_new", "ground_truth", "rephrase_prompt", "text", "labels", "ent", "prompts", "knowledge"}


@dataclass(frozen=True)
class Fact:
    """A fact as a prompt: the model should continue `prompt` with `answer` (None: its own top token).

    `subject` is the words of the prompt the fact is about (what causal tracing corrupts; None where a
    file does not say), `source` where the fact came from, `relation` its relation where known.
    """

    prompt: str
    subject: str | None = None
    answer: str | None = None
    source: str = ""
    relation: str | None = None


def same_answer(a: str, b: str) -> bool:
    """Two answers name the same thing: equal up to case and surrounding blanks."""
    return a.strip().casefold() == b.strip().casefold()


def _is_plain(value: object) -> bool:
    """A plain fact record: a prompt and a subject, none of the KnowEdit / KLoB fields."""
    return isinstance(value, dict) and "prompt" in value and "subject" in value and not OTHER_FIELDS & set(value)


def plain_facts(records: list[Record]) -> tuple[list[Fact], list[dict[str, str]]]:
    """Facts of plain `{prompt, subject, answer?}` records; a subject absent from its prompt is skipped and
    listed, a record that is not such an object is an error naming its place and the format."""
    facts, skipped = [], []
    for record in records:
        value = obj(record, f"each record must look like {PLAIN_FORMAT}")
        other = sorted(OTHER_FIELDS & set(value))
        if other:
            raise record.error(None, f"not a plain fact record (it has {', '.join(other)})",
                               f"each record of a plain fact file must look like {PLAIN_FORMAT}")
        prompt = nonempty(record, value, "prompt", hint=f"e.g. {PLAIN_FORMAT}")
        subject = field(record, value, "subject", hint=f"e.g. {PLAIN_FORMAT}")
        answer = field(record, value, "answer", default=None,
                       hint="a non-empty string, or leave it out (the model's top token)")
        if answer is not None and not answer.strip():
            raise record.error("answer", "is empty", "give the answer, or leave it out (the model's top token)")
        if not subject.strip() or subject not in prompt:
            skipped.append({"source": record.label, "reason": f"subject {subject!r} does not occur in the prompt"})
            continue
        facts.append(Fact(prompt, subject, answer, record.label))
    return facts, skipped


def file_facts(path: str | Path) -> tuple[list[Fact], list[dict[str, str]]]:
    """(facts, skipped records as {source, reason}) of a fact file: plain `{prompt, subject, answer?}`
    records (.json list or .jsonl), KLoB-c (.jsonl) or a KnowEdit task file (.json).

    A KnowEdit fact's answer is its ground truth when it has one, else None (WikiData_recent's insertions:
    the model's own top token).
    """
    p = Path(path)
    records = read_records(p, "dataset", fix=f"pass a fact file (.json/.jsonl of {PLAIN_FORMAT}), a KnowEdit "
                           ".json, a KLoB-c .jsonl, or 'organism'")
    if not records:
        raise KelocateError(f"{p}: holds no records; each record must look like {PLAIN_FORMAT}")
    if _is_plain(records[0].value):
        return plain_facts(records)
    if p.suffix == ".jsonl":
        return [Fact(prompt, f.subject, f.object, f.source, f.relation) for f in load_klob_c(p)
                for prompt in f.prompts], []
    with warnings.catch_warnings():  # skipped records are listed by the caller
        warnings.simplefilter("ignore", KnowEditSkipWarning)
        cases = load_knowedit(p)
    facts = [Fact(c.prompt, c.subject, c.ground_truth, c.label) for c in cases]
    skipped = [{"source": s.label, "reason": s.reason} for s in cases.skipped]
    return facts, skipped


def _control(record: Record) -> Fact:
    """One record of a control-fact file: prompt and answer required, subject and relation optional;
    every value stripped, an empty one counts as left out."""
    value = obj(record, f"a fact looks like {CONTROL_FORMAT}")
    values: dict[str, str | None] = {}
    for key in ("prompt", "answer", "subject", "relation"):
        item = field(record, value, key, default=None, hint=f"a fact looks like {CONTROL_FORMAT}")
        values[key] = item.strip() if item and item.strip() else None
    for key in ("prompt", "answer"):
        if not values[key]:
            raise record.error(key, "missing or empty", f"a fact looks like {CONTROL_FORMAT}")
    return Fact(values["prompt"], values["subject"], values["answer"], record.label, values["relation"])


def read_fact_file(path: str | Path, option: str = "--facts") -> list[Fact]:
    """Facts {prompt, answer, subject?, relation?} of a JSON list or a JSON-lines file (the specificity
    check's control facts)."""
    records = read_records(path, "fact file",
                           fix=f"pass {option} a .json list or .jsonl of {{prompt, subject, answer, relation}} records")
    return [_control(record) for record in records]
