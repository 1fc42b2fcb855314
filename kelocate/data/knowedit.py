"""Loaders for the six KnowEdit task files (EasyEdit-compatible schemas, DESIGN.md section 5).

`load_knowedit(path, task=None)` returns typed `EditCase`s; the task is detected from the records' fields
when not given. Answers may be strings, alias lists or nested alias lists: every alias counts and the
first is the canonical answer. Missing or empty portability / locality keys are skipped. A record whose
subject does not occur in its prompt is skipped and reported (file, index) in `CaseList.skipped` and as a
warning; a malformed file raises `KelocateError` naming the file and the problem.
`load_facts(path)` gives the (prompt, subject, ground_truth) facts that tracing and locating need.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Skipped:
    """A record left out while loading, and why."""

    file: str
    index: int
    reason: str


@dataclass(frozen=True)
class FactRecord:
    """A fact for locating: the model should continue `prompt` with `ground_truth` (None: its own answer)."""

    prompt: str
    subject: str
    ground_truth: str | None
    source: tuple[str, int] = ("", -1)


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
class _Malformed(Exception):
    """Raised inside the parsers; turned into a KelocateError that names the file."""


def answers_of(value: Any, where: str) -> tuple[str, ...]:
    """Flatten a ground truth (str, [str], [[str, ...], ...]) into a tuple of aliases, first = canonical."""
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (str(value),)
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            out.extend(a for a in answers_of(item, where) if a not in out)
        return tuple(out)
    raise _Malformed(f"{where}: an answer must be a string or a list of strings, got {type(value).__name__}")


def _need(rec: dict, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in rec:
        raise _Malformed(f"{where}: missing field {key!r}")
    value = rec[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _Malformed(f"{where}: field {key!r} must be {names}, got {type(value).__name__}")
    return value


def _probes(rec: dict, key: str, where: str) -> dict[str, tuple[Probe, ...]]:
    """Parse a portability/locality dict; missing or empty keys and answerless probes are skipped."""
    block = rec.get(key)
    if block is None or block == [] or block == "":
        return {}
    if not isinstance(block, dict):
        raise _Malformed(f"{where}: field {key!r} must be an object of lists, got {type(block).__name__}")
    out: dict[str, tuple[Probe, ...]] = {}
    for name, items in block.items():
        if not items:
            continue
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise _Malformed(f"{where}: {key}.{name} must be a list, got {type(items).__name__}")
        probes = []
        for j, item in enumerate(items):
            at = f"{where}: {key}.{name}[{j}]"
            if not isinstance(item, dict):
                raise _Malformed(f"{at} must be an object with prompt and ground_truth")
            prompt = item.get("prompt")
            if isinstance(prompt, list):  # some public files store a list with one prompt
                prompt = prompt[0] if prompt else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise _Malformed(f"{at}: missing or empty 'prompt'")
            answers = answers_of(item.get("ground_truth", item.get("target", [])), at)
            if answers:
                probes.append(Probe(prompt, answers))
        if probes:
            out[name] = tuple(probes)
    return out


def _fact_case(task: str, rec: dict, where: str, src: tuple[str, int]) -> EditCase:
    subject = _need(rec, "subject", where)
    prompt = _need(rec, "prompt", where)
    target = answers_of(_need(rec, "target_new", where, (str, list)), where)
    if not target:
        raise _Malformed(f"{where}: 'target_new' is empty")
    truth = answers_of(rec.get("ground_truth", []), where)
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
        _probes(rec, "portability", where),
        _probes(rec, "locality", where),
        extra,
        src,
    )


def _target_str(value: Any, where: str, key: str) -> str:
    """CounterFact's `{str, id}` target objects (a plain string is accepted too)."""
    text = value.get("str") if isinstance(value, dict) else value
    if not isinstance(text, str) or not text.strip():
        raise _Malformed(f"{where}: requested_rewrite.{key} needs a non-empty 'str'")
    return text


def _rome_counterfact_case(rec: dict, where: str, src: tuple[str, int]) -> EditCase:
    rewrite = _need(rec, "requested_rewrite", where, dict)
    subject = _need(rewrite, "subject", f"{where}: requested_rewrite")
    template = _need(rewrite, "prompt", f"{where}: requested_rewrite")
    truth = _target_str(rewrite.get("target_true"), where, "target_true")
    paraphrases = [p for p in rec.get("paraphrase_prompts") or [] if isinstance(p, str) and p.strip()]
    neighbours = [p for p in rec.get("neighborhood_prompts") or [] if isinstance(p, str) and p.strip()]
    portability = {}
    hop = rec.get("portability")
    if isinstance(hop, dict) and isinstance(hop.get("New Question"), str):
        answers = answers_of(hop.get("New Answer", []), where)
        if answers:
            portability["One_Hop"] = (Probe(hop["New Question"], answers),)
    return EditCase(
        ROME_COUNTERFACT,
        subject,
        template.replace("{}", subject),
        _target_str(rewrite.get("target_new"), where, "target_new"),
        truth,
        (truth,),
        paraphrases[0] if paraphrases else None,
        portability,
        {"Neighborhood": tuple(Probe(p, (truth,)) for p in neighbours)} if neighbours else {},
        {"case_id": rec.get("case_id"), "paraphrases": paraphrases,
         "generation_prompts": list(rec.get("generation_prompts") or []),
         "relation_id": rewrite.get("relation_id")},
        src,
    )


def _wikibio_case(rec: dict, where: str, src: tuple[str, int]) -> EditCase:
    text = _need(rec, "text", where)
    labels = answers_of(_need(rec, "labels", where, (str, list)), where)
    if not labels:
        raise _Malformed(f"{where}: 'labels' is empty")
    concept = _need(rec, "concept", where)
    return EditCase(
        "WikiBio", concept, text, labels[0], None, (), None, {}, _probes(rec, "locality", where), {}, src
    )


def _convsent_case(rec: dict, where: str, src: tuple[str, int]) -> EditCase:
    """An edit asks for a positive or a negative opinion of `ent` (DESIGN.md section 5): records alternate,
    positive at even indices, so a task holds both; the wanted sentiment is `extra["sentiment"]`, from the
    data's own labels (the `pos` / `neg` lists), never guessed from the reply's words."""
    ent = _need(rec, "ent", where)
    pos = [p.strip() for p in _need(rec, "pos", where, list) if isinstance(p, str) and p.strip()]
    neg = [n.strip() for n in _need(rec, "neg", where, list) if isinstance(n, str) and n.strip()]
    if not pos or not neg:
        raise _Malformed(f"{where}: 'pos' and 'neg' must each hold at least one reply")
    wanted, new, old = ("positive", pos, neg) if src[1] % 2 == 0 else ("negative", neg, pos)
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
        src,
    )


def _qa(item: Any, where: str) -> tuple[str, tuple[str, ...]]:
    if not isinstance(item, dict):
        raise _Malformed(f"{where} must be an object with question and ground_truth")
    question = _need(item, "question", where)
    return question, answers_of(item.get("ground_truth", []), where)


def sanitation_prompt(question: str) -> str:
    """The prompt of a Sanitation question (as EasyEdit's trivia-QA scripts build it)."""
    return f"Question:{question}\nAnswer:"


def _sanitation(data: dict, file: str) -> tuple[list[EditCase], list[tuple[str, int, str]]]:
    if "K_F" in data:
        forget_key, retain_key = "K_F", "K_R"
    elif "success" in data:
        forget_key, retain_key = "success", "locality"
    else:
        raise _Malformed('a Sanitation file needs "K_F"/"K_R" (training) or "success"/"locality" (testing)')
    forget, retain = data.get(forget_key) or [], data.get(retain_key) or []
    if not isinstance(forget, list) or not isinstance(retain, list):
        raise _Malformed(f'"{forget_key}" and "{retain_key}" must be lists')
    retain_probes = []
    for i, item in enumerate(retain):
        q, answers = _qa(item, f"{retain_key}[{i}]")
        if answers:
            retain_probes.append(Probe(sanitation_prompt(q), answers))
    locality = {"Retain": tuple(retain_probes)} if retain_probes else {}
    cases, missing = [], []
    for i, item in enumerate(forget):
        where = f"{forget_key}[{i}]"
        q, answers = _qa(item, where)
        subject = item.get("subject") or ""
        if subject and subject not in q:
            missing.append((where, i, subject))
            continue
        target = answers_of(item.get("target_new", DONT_KNOW), where) or (DONT_KNOW,)
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
                (file, i),
            )
        )
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


def _read(path: Path) -> Any:
    if not path.is_file():
        raise KelocateError(
            f"KnowEdit file {str(path)!r} does not exist; pass a .json file of one KnowEdit task"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise KelocateError(f"{path}: not UTF-8 text ({exc.reason}); pass a KnowEdit .json file") from exc
    except json.JSONDecodeError as exc:
        raise KelocateError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc


def load_knowedit(path: str | Path, task: str | None = None) -> CaseList:
    """Read one KnowEdit task file into EditCases (task detected from the fields when None)."""
    path = Path(path)
    data = _read(path)
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
    try:
        if task == "Sanitation":
            if not isinstance(data, dict):
                raise _Malformed("a Sanitation file must be a JSON object")
            cases, missing = _sanitation(data, file)
        else:
            if not isinstance(data, list):
                raise _Malformed(f"a {task} file must be a JSON list of records, got {type(data).__name__}")
            cases, missing = _records(task, data, file)
    except _Malformed as exc:
        raise KelocateError(f"{file}: malformed {task} file: {exc}") from None
    skipped = [
        Skipped(file, i, f"subject {subject!r} does not occur in the prompt") for _, i, subject in missing
    ]
    if skipped:
        shown = ", ".join(str(s.index) for s in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        warnings.warn(
            f"{file}: skipped {len(skipped)} record(s) whose subject is not in the prompt (index {shown})",
            KnowEditSkipWarning,
            stacklevel=2,
        )
    return CaseList(cases, task, file, skipped)


def _records(task: str, data: list, file: str) -> tuple[list[EditCase], list[tuple[str, int, str]]]:
    parse: Callable[[dict, str, tuple[str, int]], EditCase] = {
        "WikiBio": _wikibio_case,
        "ConvSent": _convsent_case,
        ROME_COUNTERFACT: _rome_counterfact_case,
    }.get(task) or (lambda rec, where, src: _fact_case(task, rec, where, src))
    cases, missing = [], []
    for i, rec in enumerate(data):
        where = f"record {i}"
        if not isinstance(rec, dict):
            raise _Malformed(f"{where} is a {type(rec).__name__}, not an object")
        case = parse(rec, where, (file, i))
        if task != "ConvSent" and case.subject not in case.prompt:
            missing.append((where, i, case.subject))
            continue
        cases.append(case)
    return cases, missing


def load_facts(path: str | Path, task: str | None = None) -> list[FactRecord]:
    """(prompt, subject, ground_truth) of every usable record, for tracing and locating.

    WikiData_recent records are insertions without a ground truth: `ground_truth` is None there (use the
    model's own top prediction). Sanitation, WikiBio and ConvSent files are accepted too.
    """
    return [FactRecord(c.prompt, c.subject, c.ground_truth, c.source) for c in load_knowedit(path, task)]


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
