"""Facts to trace over a data set: the organism's known facts, KnowEdit files and KLoB-c files.

Loaders belong to the studies room; the averaging itself (`locate/causal_trace/average.py`) takes a list
of `TraceFact`s and never reads a file.
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

from kelocate.data.knowedit import load_knowedit
from kelocate.errors import KelocateError
from kelocate.locate.causal_trace.average import TraceFact
from kelocate.organism import world_file
from kelocate.organism.world import load_world
from kelocate.probes.klob import load_klob_c


def organism_facts(model) -> list[TraceFact]:
    """The organism's known facts on its training templates."""
    path = world_file(model.path)
    if path is None:
        raise KelocateError(f"model {model.name!r} is not the organism (no world.json beside it), so it has no "
                            "known facts to trace; pass --dataset FILE")
    world = load_world(path)
    return [
        TraceFact(f.prompt, f.subject, f.answer, f"organism:{f.relation}")
        for f in world.fact_prompts(split="known", templates="train")
    ]


PLAIN_FORMAT = '{"prompt": "... text before the answer", "subject": "words of the prompt", "answer": "optional"}'


def read_records(p: Path) -> list[tuple[str, object]]:
    """(where, record) of a JSON list (.json) or JSON lines (.jsonl) file; malformed JSON names the place."""
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise KelocateError(f"{p}: not UTF-8 text ({exc.reason}); pass a JSON or JSON-lines fact file") from exc
    if p.suffix == ".jsonl":
        out = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append((f"{p.name}:{number}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise KelocateError(f"{p}:{number}: not valid JSON ({exc.msg}); each line must be one "
                                        f"record like {PLAIN_FORMAT}") from None
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KelocateError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, list):
        return [(p.name, data)]
    return [(f"{p.name}[{i}]", record) for i, record in enumerate(data)]


def _is_plain(record: object) -> bool:
    """A plain fact record: a prompt and a subject, none of the KnowEdit / KLoB fields."""
    other = {"target_new", "ground_truth", "rephrase_prompt", "text", "labels", "ent", "prompts", "knowledge"}
    return isinstance(record, dict) and "prompt" in record and "subject" in record and not other & set(record)


def plain_facts(records: list[tuple[str, object]]) -> tuple[list[TraceFact], list[dict[str, str]]]:
    """Facts of plain `{prompt, subject, answer?}` records; a subject absent from its prompt is skipped and
    listed, a record that is not such an object is an error naming its place and the format."""
    facts, skipped = [], []
    for where, record in records:
        if not _is_plain(record):
            raise KelocateError(f"{where}: not a fact record; each record must look like {PLAIN_FORMAT}")
        prompt, subject, answer = record.get("prompt"), record.get("subject"), record.get("answer")
        if not isinstance(prompt, str) or not prompt.strip() or not isinstance(subject, str):
            raise KelocateError(f"{where}: 'prompt' and 'subject' must be non-empty strings; e.g. {PLAIN_FORMAT}")
        if answer is not None and (not isinstance(answer, str) or not answer.strip()):
            raise KelocateError(f"{where}: 'answer' must be a non-empty string or left out (the model's top token)")
        if not subject.strip() or subject not in prompt:
            skipped.append({"source": where, "reason": f"subject {subject!r} does not occur in the prompt"})
            continue
        facts.append(TraceFact(prompt, subject, answer, where))
    return facts, skipped


def file_facts(path: str | Path) -> tuple[list[TraceFact], list[dict[str, str]]]:
    """(facts, skipped records as {source, reason}) of a fact file: plain `{prompt, subject, answer?}`
    records (.json list or .jsonl), KLoB-c (.jsonl) or a KnowEdit task file (.json).

    A KnowEdit fact's answer is its ground truth when it has one (else the model's own top token).
    """
    p = Path(path)
    if not p.is_file():
        raise KelocateError(f"dataset {str(p)!r} does not exist; pass a fact file (.json/.jsonl of {PLAIN_FORMAT}), "
                            "a KnowEdit .json, a KLoB-c .jsonl, or 'organism'")
    records = read_records(p)
    if not records:
        raise KelocateError(f"{p}: holds no records; each record must look like {PLAIN_FORMAT}")
    if _is_plain(records[0][1]):
        return plain_facts(records)
    if p.suffix == ".jsonl":
        return [TraceFact(prompt, f.subject, f.object, f.source) for f in load_klob_c(p) for prompt in f.prompts], []
    with warnings.catch_warnings():  # skipped records are listed by the caller
        warnings.simplefilter("ignore")
        cases = load_knowedit(p)
    facts = [TraceFact(c.prompt, c.subject, c.ground_truth, f"{p.name}[{c.source[1]}]") for c in cases]
    skipped = [{"source": f"{p.name}[{s.index}]", "reason": s.reason} for s in cases.skipped]
    return facts, skipped


def load_trace_facts(
    model, dataset: str, limit: int | None = None, seed: int = 0
) -> tuple[list[TraceFact], str, list[dict[str, str]]]:
    """(facts, source name, records skipped while loading) for 'organism' or a file.

    With `limit`, a seeded random subset of that size.
    """
    facts, skipped = (organism_facts(model), []) if dataset == "organism" else file_facts(dataset)
    if limit is not None and limit < len(facts):
        facts = random.Random(seed).sample(facts, limit)
    return facts, "organism known facts" if dataset == "organism" else Path(dataset).name, skipped
