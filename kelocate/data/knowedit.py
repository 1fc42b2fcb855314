"""Loaders for the six KnowEdit task files (EasyEdit-compatible schemas, DESIGN.md section 5).

`load_knowedit(path, task=None)` returns typed `EditCase`s; the task is detected from the records' fields
when not given. Answers may be strings, alias lists or nested alias lists: every alias counts and the
first is the canonical answer. Missing or empty portability / locality keys are skipped. A record whose
subject does not occur in its prompt is skipped and reported (file, index) in `CaseList.skipped` and as a
warning. The file is read by the one record reader (`data/records.py`), so a malformed record is one line
`FILE[INDEX]: FIELD: PROBLEM; a <task> record has <fields>`. `parse_knowedit` parses a document already
read (the training-edit reader detects KnowEdit files among its inputs). The facts that tracing and
locating need come from `kelocate.data.facts.file_facts`. A case's `label` (`file.json[INDEX]`) names it
in tables, facts and training edits.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kelocate.data.records import Record, RecordError, json_type, obj, read_json, records_of
from kelocate.data.records import field as record_field
from kelocate.errors import KelocateError

TASKS = ("WikiData_recent", "ZsRE", "WikiBio", "WikiData_counterfact", "ConvSent", "Sanitation")
# ROME's CounterFact schema (`requested_rewrite` with a `{}` subject placeholder, paraphrase and
# neighbourhood prompts; EasyEdit's copy adds a one-hop `portability` question): read like a seventh task
ROME_COUNTERFACT = "ROME_CounterFact"
FORMATS = (*TASKS, ROME_COUNTERFACT)
_TASK_ALIASES = {
    "wikidata_recent": "WikiData_recent",
    "recent": "WikiData_recent",
    "wiki_recent": "WikiData_recent",
    "zsre": "ZsRE",
    "wikibio": "WikiBio",
    "wikidata_counterfact": "WikiData_counterfact",
    "counterfact": "WikiData_counterfact",
    "wiki_counterfact": "WikiData_counterfact",
    "convsent": "ConvSent",
    "sanitation": "Sanitation",
    "rome_counterfact": ROME_COUNTERFACT,
    "counterfact_rome": ROME_COUNTERFACT,
}
CONVSENT_PROMPT = "What do you think of {ent}?"
DONT_KNOW = "I don't know."


class KnowEditSkipWarning(UserWarning):
    """Records were skipped while loading a KnowEdit file (their subject is not in their prompt)."""


@dataclass(frozen=True)
class Probe:
    """A portability or locality prompt with its accepted answers (first = canonical)."""

    prompt: str
    answers: tuple[str, ...]

    @property
    def ground_truth(self) -> str:
        return self.answers[0]


@dataclass(frozen=True)
class EditCase:
    """One edit request of any KnowEdit task, in one shape.

    `ground_truth` is the fact before the edit (None where the task has none, e.g. WikiData_recent
    insertions); `rephrase` the paraphrased prompt (ZsRE); `extra` task-specific fields (ZsRE `cond`,
    ConvSent `pos`/`neg` replies, Sanitation `question`/`split`); `source` = (file, index).
    """

    task: str
    subject: str
    prompt: str
    target_new: str
    ground_truth: str | None = None
    ground_truth_aliases: tuple[str, ...] = ()
    rephrase: str | None = None
    portability: dict[str, tuple[Probe, ...]] = field(default_factory=dict)
    locality: dict[str, tuple[Probe, ...]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    source: tuple[str, int] = ("", -1)

    @property
    def edit_subject(self) -> str:
        """The subject an editor keys on: the case's, or, where it has none in the prompt (Sanitation's
        trivia questions), its question, else the whole prompt, so subject-keyed editors have a position."""
        subject = self.subject if self.subject and self.subject in self.prompt else self.extra.get("question", "")
        return subject if subject and subject in self.prompt else self.prompt.strip()

    @property
    def label(self) -> str:
        """Where the case came from, for tables and result files: the file's name and the record's index."""
        return f"{Path(self.source[0]).name}[{self.source[1]}]"

    @property
    def paraphrase_prompts(self) -> tuple[str, ...]:
        """The prompt's paraphrases: the rephrase, then CounterFact's other paraphrases, without repeats."""
        return tuple(dict.fromkeys(p for p in (self.rephrase, *self.extra.get("paraphrases", ())) if p))


@dataclass(frozen=True)
class Skipped:
    """A record left out while loading, and why."""

    file: str
    index: int
    reason: str

    @property
    def label(self) -> str:
        """The record's place as an EditCase's `label` names it: the file's name and the index."""
        return f"{Path(self.file).name}[{self.index}]"


class CaseList(list):
    """A list of EditCase with the detected `task`, the `path` read and the `skipped` records."""

    def __init__(
        self, items=(), task: str = "", path: str = "", skipped: list[Skipped] | None = None
    ) -> None:
        super().__init__(items)
        self.task = task
        self.path = path
        self.skipped: list[Skipped] = list(skipped or [])


# ---------------------------------------------------------------------------------------------- parsing
# what each task's record holds, for the hint of an error
_FIELDS = {
    "WikiData_recent": "subject, prompt, target_new (portability, locality optional)",
    "ZsRE": "subject, prompt, target_new, ground_truth, rephrase_prompt (portability, locality optional)",
    "WikiBio": "text, labels, concept (locality optional)",
    "WikiData_counterfact": "subject, prompt, target_new, ground_truth (portability, locality optional)",
    "ConvSent": "ent, pos, neg",
    "Sanitation": "question, ground_truth (subject, target_new optional)",
    ROME_COUNTERFACT: "requested_rewrite: {subject, prompt, target_new, target_true}",
}


def _hint(task: str) -> str:
    return f"a {task} record has {_FIELDS[task]}"


def answers_of(value: Any, record: Record | None = None, name: str = "ground_truth", hint: str | None = None
               ) -> tuple[str, ...]:
    """Flatten a ground truth (str, [str], [[str, ...], ...]) into a tuple of aliases, first = canonical.

    Anything else is an error naming `record` and the field `name`.
    """
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (str(value),)
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            out.extend(a for a in answers_of(item, record, name, hint) if a not in out)
        return tuple(out)
    problem = f"an answer must be a string or a list of strings, got {json_type(value)}"
    if record is None:
        raise KelocateError(f"{name}: {problem}")
    raise record.error(name, problem, hint)


def _probes(record: Record, rec: dict, key: str, hint: str) -> dict[str, tuple[Probe, ...]]:
    """Parse a portability/locality dict; missing or empty keys and answerless probes are skipped."""
    block = rec.get(key)
    if block is None or block == [] or block == "":
        return {}
    if not isinstance(block, dict):
        raise record.error(key, f"must be an object of lists, got {json_type(block)}", hint)
    out: dict[str, tuple[Probe, ...]] = {}
    for name, items in block.items():
        if not items:
            continue
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise record.error(f"{key}.{name}", f"must be a list, got {json_type(items)}", hint)
        probes = []
        for j, item in enumerate(items):
            at = f"{key}.{name}[{j}]"
            if not isinstance(item, dict):
                raise record.error(at, f"must be an object with prompt and ground_truth, got {json_type(item)}",
                                   hint)
            prompt = item.get("prompt")
            if isinstance(prompt, list):  # some public files store a list with one prompt
                prompt = prompt[0] if prompt else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise record.error(f"{at}.prompt", "missing or empty", hint)
            answers = answers_of(item.get("ground_truth", item.get("target", [])), record, f"{at}.ground_truth",
                                 hint)
            if answers:
                probes.append(Probe(prompt, answers))
        if probes:
            out[name] = tuple(probes)
    return out


def _fact_case(task: str, record: Record) -> EditCase:
    hint = _hint(task)
    rec = obj(record, hint)
    subject = record_field(record, rec, "subject", hint=hint)
    prompt = record_field(record, rec, "prompt", hint=hint)
    target = answers_of(record_field(record, rec, "target_new", (str, list), hint=hint), record, "target_new", hint)
    if not target:
        raise record.error("target_new", "is empty", hint)
    truth = answers_of(rec.get("ground_truth", []), record, "ground_truth", hint)
    extra = {}
    rephrase = None
    if task == "ZsRE":
        rephrase = rec.get("rephrase_prompt") or None
        if "cond" in rec:
            extra["cond"] = rec["cond"]
    return EditCase(
        task,
        subject,
        prompt,
        target[0],
        truth[0] if truth else None,
        truth,
        rephrase,
        _probes(record, rec, "portability", hint),
        _probes(record, rec, "locality", hint),
        extra,
        (str(record.path), record.index),
    )


def _target_str(record: Record, value: Any, key: str, hint: str) -> str:
    """CounterFact's `{str, id}` target objects (a plain string is accepted too)."""
    text = value.get("str") if isinstance(value, dict) else value
    if not isinstance(text, str) or not text.strip():
        raise record.error(f"requested_rewrite.{key}", "needs a non-empty 'str'", hint)
    return text


def _rome_counterfact_case(record: Record) -> EditCase:
    hint = _hint(ROME_COUNTERFACT)
    rec = obj(record, hint)
    rewrite = record_field(record, rec, "requested_rewrite", dict, hint=hint)
    subject = record_field(record, rewrite, "subject", path="requested_rewrite", hint=hint)
    template = record_field(record, rewrite, "prompt", path="requested_rewrite", hint=hint)
    truth = _target_str(record, rewrite.get("target_true"), "target_true", hint)
    paraphrases = [p for p in rec.get("paraphrase_prompts") or [] if isinstance(p, str) and p.strip()]
    neighbours = [p for p in rec.get("neighborhood_prompts") or [] if isinstance(p, str) and p.strip()]
    portability = {}
    hop = rec.get("portability")
    if isinstance(hop, dict) and isinstance(hop.get("New Question"), str):
        answers = answers_of(hop.get("New Answer", []), record, "portability.New Answer", hint)
        if answers:
            portability["One_Hop"] = (Probe(hop["New Question"], answers),)
    return EditCase(
        ROME_COUNTERFACT,
        subject,
        template.replace("{}", subject),
        _target_str(record, rewrite.get("target_new"), "target_new", hint),
        truth,
        (truth,),
        paraphrases[0] if paraphrases else None,
        portability,
        {"Neighborhood": tuple(Probe(p, (truth,)) for p in neighbours)} if neighbours else {},
        {"case_id": rec.get("case_id"), "paraphrases": paraphrases,
         "generation_prompts": list(rec.get("generation_prompts") or []),
         "relation_id": rewrite.get("relation_id")},
        (str(record.path), record.index),
    )


def _wikibio_case(record: Record) -> EditCase:
    hint = _hint("WikiBio")
    rec = obj(record, hint)
    text = record_field(record, rec, "text", hint=hint)
    labels = answers_of(record_field(record, rec, "labels", (str, list), hint=hint), record, "labels", hint)
    if not labels:
        raise record.error("labels", "is empty", hint)
    concept = record_field(record, rec, "concept", hint=hint)
    return EditCase("WikiBio", concept, text, labels[0], None, (), None, {}, _probes(record, rec, "locality", hint),
                    {}, (str(record.path), record.index))


def _convsent_case(record: Record) -> EditCase:
    """An edit asks for a positive or a negative opinion of `ent` (DESIGN.md section 5): records alternate,
    positive at even indices, so a task holds both; the wanted sentiment is `extra["sentiment"]`, from the
    data's own labels (the `pos` / `neg` lists), never guessed from the reply's words."""
    hint = _hint("ConvSent")
    rec = obj(record, hint)
    ent = record_field(record, rec, "ent", hint=hint)
    pos = [p.strip() for p in record_field(record, rec, "pos", list, hint=hint) if isinstance(p, str) and p.strip()]
    neg = [n.strip() for n in record_field(record, rec, "neg", list, hint=hint) if isinstance(n, str) and n.strip()]
    if not pos or not neg:
        raise record.error("pos" if not pos else "neg", "must hold at least one reply", hint)
    wanted, new, old = ("positive", pos, neg) if record.index % 2 == 0 else ("negative", neg, pos)
    return EditCase(
        "ConvSent",
        ent,
        CONVSENT_PROMPT.format(ent=ent),
        new[0],
        old[0],
        (old[0],),
        None,
        {},
        {},
        {"pos": pos, "neg": neg, "sentiment": wanted},
        (str(record.path), record.index),
    )


def _qa(record: Record) -> tuple[dict, str, tuple[str, ...]]:
    hint = _hint("Sanitation")
    item = obj(record, hint)
    question = record_field(record, item, "question", hint=hint)
    return item, question, answers_of(item.get("ground_truth", []), record, "ground_truth", hint)


def sanitation_prompt(question: str) -> str:
    """The prompt of a Sanitation question (as EasyEdit's trivia-QA scripts build it)."""
    return f"Question:{question}\nAnswer:"


def _part(data: dict, key: str, path: Path) -> list[Record]:
    """The records of one list of a Sanitation file (locator '[KEY][INDEX]')."""
    items = data.get(key) or []
    if not isinstance(items, list):
        raise RecordError(f"{path}[{key}]", None, f"must be a list of questions, got {json_type(items)}",
                          'a Sanitation file holds lists "K_F" and "K_R" (training) or "success" and "locality"')
    return [Record(path, f"[{key}][{i}]", i, item) for i, item in enumerate(items)]


def _sanitation(data: Any, path: Path) -> tuple[list[EditCase], list[tuple[int, str]]]:
    if not isinstance(data, dict):
        raise KelocateError(f'{path}: a Sanitation file must be a JSON object with "K_F"/"K_R" (training) or '
                            f'"success"/"locality" (testing), got {json_type(data)}')
    if "K_F" in data:
        forget_key, retain_key = "K_F", "K_R"
    elif "success" in data:
        forget_key, retain_key = "success", "locality"
    else:
        raise KelocateError(f'{path}: a Sanitation file needs "K_F"/"K_R" (training) or "success"/"locality" '
                            "(testing)")
    forget, retain = _part(data, forget_key, path), _part(data, retain_key, path)
    retain_probes = []
    for record in retain:
        _, q, answers = _qa(record)
        if answers:
            retain_probes.append(Probe(sanitation_prompt(q), answers))
    locality = {"Retain": tuple(retain_probes)} if retain_probes else {}
    cases, missing = [], []
    for record in forget:
        item, q, answers = _qa(record)
        subject = item.get("subject") or ""
        if subject and subject not in q:
            missing.append((record.index, subject))
            continue
        target = answers_of(item.get("target_new", DONT_KNOW), record, "target_new", _hint("Sanitation")) \
            or (DONT_KNOW,)
        cases.append(
            EditCase(
                "Sanitation",
                subject,
                sanitation_prompt(q),
                target[0],
                answers[0] if answers else None,
                answers,
                None,
                {},
                locality,
                {"question": q, "split": forget_key},
                (str(path), record.index),
            )
        )
    return cases, missing


def _records(task: str, data: Any, path: Path) -> tuple[list[EditCase], list[tuple[int, str]]]:
    if not isinstance(data, list):
        raise KelocateError(f"{path}: a {task} file must be a JSON list of records, got {json_type(data)}")
    parse: Callable[[Record], EditCase] = {
        "WikiBio": _wikibio_case,
        "ConvSent": _convsent_case,
        ROME_COUNTERFACT: _rome_counterfact_case,
    }.get(task) or (lambda record: _fact_case(task, record))
    cases, missing = [], []
    for record in records_of(data, path):
        case = parse(record)
        if task != "ConvSent" and case.subject not in case.prompt:
            missing.append((record.index, case.subject))
            continue
        cases.append(case)
    return cases, missing


# ---------------------------------------------------------------------------------------------- entry points
def normalize_task(task: str) -> str:
    """Canonical task name ('zsre' -> 'ZsRE'); a KelocateError for an unknown one."""
    key = task.strip().lower().replace("-", "_")
    if key in _TASK_ALIASES:
        return _TASK_ALIASES[key]
    raise KelocateError(f"unknown KnowEdit task {task!r}; use one of {', '.join(FORMATS)}")


def detect_task(data: Any) -> str | None:
    """Which KnowEdit task a parsed file holds, from its fields (None when it cannot tell)."""
    if isinstance(data, dict):
        return "Sanitation" if {"K_F", "K_R", "success"} & set(data) else None
    if not isinstance(data, list) or not data:
        return None
    keys = set().union(*(r.keys() for r in data[:20] if isinstance(r, dict)))
    if "requested_rewrite" in keys:
        return ROME_COUNTERFACT
    if "ent" in keys and ("pos" in keys or "neg" in keys):
        return "ConvSent"
    if "text" in keys and "labels" in keys:
        return "WikiBio"
    if "rephrase_prompt" in keys or "cond" in keys:
        return "ZsRE"
    if {"prompt", "target_new"} <= keys:
        return "WikiData_counterfact" if "ground_truth" in keys else "WikiData_recent"
    return None


def load_knowedit(path: str | Path, task: str | None = None) -> CaseList:
    """Read one KnowEdit task file into EditCases (task detected from the fields when None)."""
    path = Path(path)
    data = read_json(path, "KnowEdit file", fix="pass a .json file of one KnowEdit task")
    return parse_knowedit(data, path, task, stacklevel=3)


def parse_knowedit(data: Any, path: str | Path, task: str | None = None, stacklevel: int = 2) -> CaseList:
    """The EditCases of a KnowEdit document already read from `path` (task detected from the fields when
    None); records whose subject is not in their prompt are skipped, listed and warned about."""
    path = Path(path)
    file = str(path)
    if task is None:
        task = detect_task(data)
        if task is None:
            raise KelocateError(
                f"{file}: cannot tell which KnowEdit task this is (empty, or no known fields); "
                f"pass the task ({', '.join(TASKS)})"
            )
    else:
        task = normalize_task(task)
    cases, missing = _sanitation(data, path) if task == "Sanitation" else _records(task, data, path)
    skipped = [Skipped(file, i, f"subject {subject!r} does not occur in the prompt") for i, subject in missing]
    if skipped:
        shown = ", ".join(str(s.index) for s in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        warnings.warn(
            f"{file}: skipped {len(skipped)} record(s) whose subject is not in the prompt (index {shown})",
            KnowEditSkipWarning,
            stacklevel=stacklevel,
        )
    return CaseList(cases, task, file, skipped)


def summary(cases: CaseList) -> dict[str, Any]:
    """What a loaded file holds, for `kelocate study validate`: the task, counts, the fields each case lacks
    (no ground truth, rephrase, portability or locality), the probe counts per sub-type, and the skipped
    records (file, index, why)."""
    portability: dict[str, int] = {}
    locality: dict[str, int] = {}
    for case in cases:
        for name, probes in case.portability.items():
            portability[name] = portability.get(name, 0) + len(probes)
        for name, probes in case.locality.items():
            locality[name] = locality.get(name, 0) + len(probes)
    missing = {
        "ground_truth": sum(c.ground_truth is None for c in cases),
        "rephrase": sum(c.rephrase is None for c in cases),
        "portability": sum(not c.portability for c in cases),
        "locality": sum(not c.locality for c in cases),
    }
    return {"file": cases.path, "task": cases.task, "records": len(cases) + len(cases.skipped), "cases": len(cases),
            "missing": missing, "portability": portability, "locality": locality,
            "skipped": [{"file": s.file, "index": s.index, "reason": s.reason} for s in cases.skipped]}
