"""The KnowEdit study runner: a study config (TOML) -> units of work -> one JSON line per finished unit.

A unit is one method on one task for one case (mode `single`: edit, score, revert), or for `n` cases edited
together (`batch`) or one after another (`sequential`, scored after the last edit). Finished units are
appended to `results.jsonl` one line at a time (written, flushed and fsynced); a rerun skips the units
already there, and a line torn by a kill is cut off before anything is appended, so a SIGKILL at any moment
loses at most the unit in flight. Result lines hold only what the run computed (no timings), so a killed
and resumed run writes the same file as an uninterrupted one; timings go to `timings.jsonl`. The resolved
config and the environment (package versions, device, model fingerprint) are saved in `study.json`; a
folder made with another config is refused.

Editors come from `kelocate.edit.editor`, located by `kelocate.locate_then_edit.edit` (KN's neurons, or the
profile's layers); MEND and SERAC use the checkpoints the config names, or, on the organism, train them
into the study folder first (resumable like every training). IKE's demonstrations are the task's other
cases. Scores come from `kelocate.studies.knowedit.metrics`, against the unedited model's predictions taken once per
task before any edit.
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kelocate.atomic import os_errors, write_text
from kelocate.data.knowedit import FORMATS, TASKS, EditCase, load_knowedit, normalize_task
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError
from kelocate.studies.knowedit.metrics import (
    Baseline,
    MetricSettings,
    baseline,
    edited_prompts,
    score_case,
    teacher_forced_many,
)

REQUIRABLE = ("ground_truth", "rephrase", "portability", "locality")
METHODS = ("kn", "rome", "memit", "pmet", "alphaedit", "mend", "ft-l", "ft-m", "serac", "ice", "adalora")
MODES = ("single", "batch", "sequential")
RESULTS, TIMINGS, STUDY = "results.jsonl", "timings.jsonl", "study.json"


@dataclass
class StudyConfig:
    """What a study runs. `files` maps a task to its file; `data = "organism"` exports the organism's."""

    methods: list[str] = field(default_factory=lambda: list(METHODS))
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    model: str | None = None
    data: str = "organism"
    split: str = "test"
    files: dict[str, str] = field(default_factory=dict)
    cases: int = 10
    require: list[str] = field(default_factory=list)  # only cases that have these fields, e.g. ["portability"]
    seed: int = 0
    mode: str = "single"
    n: int = 1
    generation: bool = True
    fluency: bool = True
    curve: list[int] = field(default_factory=lambda: [1, 10, 100, 500])  # sequential: score after k edits
    train_on: list[str] = field(default_factory=list)  # MEND/SERAC trained on each task's train split
    train_files: dict[str, str] = field(default_factory=dict)  # task -> train file (other models than the organism)
    general: bool = False  # sequential: general ability before the edits and at every curve point
    general_facts: str | None = None  # other models: JSONL {prompt, answer} of facts to recall
    general_text: str | None = None  # other models: held-out text, one passage per line
    editors: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> editor settings


def load_config(path: str | Path) -> StudyConfig:
    """Read and check a study TOML ([study] table, optional [editors.<method>] tables); one line per mistake."""
    path = Path(path)
    if not path.is_file():
        raise KelocateError(f"study config {str(path)!r} does not exist; pass a TOML file (see studies/)")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise KelocateError(f"{path}: not valid TOML ({exc}); fix the file") from None
    study = dict(raw.get("study", {}))
    known = {f for f in StudyConfig.__dataclass_fields__ if f != "editors"}
    unknown = sorted(set(study) - known) or sorted(set(raw) - {"study", "editors"})
    if unknown:
        raise KelocateError(f"{path}: unknown setting {unknown[0]!r}; known [study] settings: "
                            f"{', '.join(sorted(known))}")
    config = StudyConfig(**study, editors=dict(raw.get("editors", {})))
    base = path.parent
    config.files = {normalize_task(t): str((base / f).resolve()) for t, f in config.files.items()}
    return check_config(config, base)


def check_config(config: StudyConfig, base: Path = Path(".")) -> StudyConfig:
    """Canonical names, and one line of error for anything that cannot run."""
    bad = [m for m in config.methods if m not in METHODS and m != "ike"]  # 'mend@TASK' comes from train_on
    if bad:
        raise KelocateError(f"unknown method {bad[0]!r} in the study; use some of {', '.join(METHODS)}, ike")
    config.tasks = [normalize_task(t) for t in config.tasks]
    config.train_on = [normalize_task(t) for t in config.train_on]
    config.train_files = {normalize_task(t): str((base / f).resolve()) for t, f in config.train_files.items()}
    if config.data != "organism" and any(t not in config.train_files for t in config.train_on):
        raise KelocateError("train_on needs train_files = {TASK = \"path\"} for a model other than the organism")
    bad = [f for f in config.require if f not in REQUIRABLE]
    if bad:
        raise KelocateError(f"cannot require {bad[0]!r} of a case; use some of {', '.join(REQUIRABLE)}")
    if config.mode not in MODES:
        raise KelocateError(f"unknown mode {config.mode!r}; use single, batch or sequential")
    if config.cases < 1 or config.n < 1:
        raise KelocateError("cases and n must be at least 1")
    if config.mode == "single" and config.n != 1:
        raise KelocateError("mode 'single' edits one case per unit; use mode 'batch' or 'sequential' with n")
    if config.data != "organism":
        missing = [t for t in config.tasks if t not in config.files]
        if missing:
            raise KelocateError(f"no file for task {missing[0]}: give [study] files = {{{missing[0]} = \"path\"}} "
                                "or data = \"organism\"")
    if config.general and config.mode != "sequential":
        raise KelocateError("general = true measures general ability after sequential edits; set mode = "
                            "\"sequential\"")
    for key in ("general_facts", "general_text"):
        if getattr(config, key) is not None:
            path = (base / getattr(config, key)).resolve()
            if not path.is_file():
                raise KelocateError(f"{key} file {str(path)!r} does not exist; fix [study] {key}")
            setattr(config, key, str(path))
    for path in config.files.values():
        if not Path(path).is_file():
            raise KelocateError(f"task file {path!r} does not exist; fix [study] files")
    for method, settings in config.editors.items():
        if not isinstance(settings, dict):
            raise KelocateError(f"[editors.{method}] must be a table of settings")
        for key in ("trained", "config_file"):
            if key in settings:
                settings[key] = str((base / settings[key]).resolve())
    return config


@dataclass(frozen=True)
class Unit:
    """One method on one task for some cases (indices into the task's loaded cases)."""

    method: str
    task: str
    cases: tuple[int, ...]
    mode: str

    @property
    def key(self) -> str:
        return f"{self.method}|{self.task}|{self.mode}|{','.join(map(str, self.cases))}"


def study_methods(config: StudyConfig) -> list[str]:
    """The methods as units name them: with `train_on`, MEND and SERAC once per training task ('mend@ZsRE':
    trained on ZsRE's train split, the cross-domain comparison)."""
    out = []
    for method in config.methods:
        if method in ("mend", "serac") and config.train_on:
            out += [f"{method}@{task}" for task in config.train_on]
        else:
            out.append(method)
    return out


def selected(config: StudyConfig, cases: Sequence[EditCase]) -> list[int]:
    """The cases a task contributes (indices into its file): those with every `require`d field, all of them
    or a seeded sample of `cases` (in file order). A sample, not the first ones: exported files group records
    (the organism's put those with portability probes after the others)."""
    eligible = [i for i, case in enumerate(cases) if all(getattr(case, name) for name in config.require)]
    if config.cases >= len(eligible):
        return eligible
    return sorted(random.Random(config.seed).sample(eligible, config.cases))


def selected_cases(config: StudyConfig, cases: Sequence[EditCase]) -> dict[int, EditCase]:
    """The selected cases by their index in the task's file."""
    return {i: cases[i] for i in selected(config, cases)}


def plan(config: StudyConfig, loaded: Mapping[str, Sequence[EditCase]]) -> list[Unit]:
    """Every unit of the study, methods outermost (each method's model state is set up once). A task left
    with no case (none has the `require`d fields) is one line of error."""
    chosen = {task: selected(config, loaded[task]) for task in config.tasks}
    empty = [task for task, indices in chosen.items() if not indices]
    if empty:
        wanted = f" with {' and '.join(config.require)}" if config.require else ""
        raise KelocateError(f"task {empty[0]} has no case{wanted}; drop it from [study] tasks "
                            "(or the requirement)")
    size = 1 if config.mode == "single" else config.n
    out = []
    for method in study_methods(config):
        for task in config.tasks:
            out += [Unit(method, task, tuple(chosen[task][lo:lo + size]), config.mode)
                    for lo in range(0, len(chosen[task]), size)]
    return out


def task_state(config: StudyConfig, model, cases: Sequence[EditCase], settings: MetricSettings):
    """What every unit of a task works from, taken once on the unedited model: the cases as the study edits
    them (ConvSent's selected edits ask for the opposite of the opinion the model holds:
    `against_held_opinions`, greedy, so every Ray worker derives the same), the baseline of each selected
    case (by index) and the general-ability set (or None)."""
    if cases and cases[0].task == "ConvSent":
        from kelocate.studies.knowedit.metrics import against_held_opinions, lexicon_for

        lexicon = lexicon_for(settings, model.source.get("family") == "organism")
        cases = against_held_opinions(model, cases, selected(config, cases), lexicon)
    chosen = selected_cases(config, cases)
    spare = 0 if config.mode == "single" else config.n - 1  # a unit's other edits are not "other topics"
    befores = dict(zip(chosen, baseline(model, list(chosen.values()), settings, spare), strict=True))
    return cases, befores, general_set(config, model, list(chosen.values()))


# ---------------------------------------------------------------------- the results file
class ResultsStore:
    """results.jsonl: one JSON object per finished unit, appended atomically line by line."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / RESULTS
        self.timings = folder / TIMINGS

    def rows(self, repair: bool = False) -> list[dict]:
        """The finished units' rows. A torn last line (a kill mid-write) is left out; `repair` (the writer,
        before it appends) also cuts it off the file. Readers never cut: a line being written right now
        looks torn too."""
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data) and repair:
            with os_errors(self.path):
                with open(self.path, "r+b") as handle:
                    handle.truncate(end)
        rows = []
        for number, line in enumerate(data[:end].splitlines(), 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise KelocateError(f"{self.path} line {number} is not JSON; the results file was edited by hand "
                                    "or damaged: delete that line (its unit reruns)") from None
        return rows

    def append(self, row: dict, seconds: float) -> None:
        line = (json.dumps(row, sort_keys=True) + "\n").encode()
        with os_errors(self.path):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = 0
                while written < len(line):  # a short write (a full disk raises) continues where it stopped
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            finally:
                os.close(fd)
            with open(self.timings, "a") as handle:
                handle.write(json.dumps({"unit": row["unit"], "seconds": round(seconds, 3)}) + "\n")


# ---------------------------------------------------------------------- cases and requests
def task_files(config: StudyConfig, model) -> dict[str, str]:
    """The file of every task: the config's, or the organism's export (written once into the cache)."""
    if config.data != "organism":
        return {t: config.files[t] for t in config.tasks}
    out = {}
    for task in config.tasks:
        out[task] = config.files[task] if task in config.files else organism_split_file(model, task, config.split)
    return out


def organism_knowedit_dir(model) -> Path:
    """The organism's KnowEdit export, written once into kelocate's cache (keyed on its world file)."""
    from kelocate.studies.klob.study import organism_export_dir

    world, dest = organism_export_dir(model, "knowedit", "are no built-in KnowEdit files; set data and files in "
                                                         "the study config")
    if not (dest / "manifest.json").is_file():
        from kelocate.organism.export import export
        from kelocate.organism.world import load_world

        export(load_world(world), dest)
    return dest


def request_of(case: EditCase) -> EditRequest:
    """The edit request of a case. A case without a usable subject (Sanitation's trivia questions have
    none) uses its question, which the prompt contains, so subject-keyed editors still have a position."""
    subject = case.subject if case.subject and case.subject in case.prompt else case.extra.get("question", "")
    if not subject or subject not in case.prompt:
        subject = case.prompt.strip()
    paraphrases = [p for p in (case.rephrase, *case.extra.get("paraphrases", ())) if p]
    return EditRequest(case.prompt, subject, case.target_new, ground_truth=case.ground_truth,
                       paraphrases=tuple(dict.fromkeys(paraphrases)))


# ---------------------------------------------------------------------- running
def make_editor(method: str, config: StudyConfig, cases: Sequence[EditCase], model, folder: Path,
                log: Callable[[str], None]):
    """The editor of a method with the study's settings (trained checkpoints, IKE's pool); 'mend@TASK' is
    MEND trained on TASK's train split."""
    from kelocate.edit import editor

    base, _, train_task = method.partition("@")
    settings = dict(config.editors.get(base, {}))
    trained = settings.pop("trained", None)
    if train_task:  # only a checkpoint trained on that task will do (the Ray driver names it so)
        trained = config.editors.get(method, {}).get("trained")
    overrides = settings.pop("train", {})
    if base in ("mend", "serac"):
        if trained is None:
            trained = str(train_for_study(method, model, folder, log, config, overrides))
        settings["hypernet" if base == "mend" else "checkpoint"] = trained
    if base == "ike":
        settings["pool"] = [request_of(c) for c in cases]
    return editor(base, **settings)


def training_edits_of(cases: Sequence[EditCase]):
    """Training edits from loaded cases: each request, with its locality probes as neighbours."""
    from kelocate.edit.training import TrainingEdit

    return [TrainingEdit(request_of(c), (), tuple((p.prompt, p.ground_truth) for probes in c.locality.values()
                                                  for p in probes)) for c in cases]


def train_for_study(method: str, model, folder: Path, log: Callable[[str], None], config: StudyConfig | None = None,
                    overrides: dict[str, Any] | None = None) -> Path:
    """Train MEND or SERAC into the study folder (resumes if killed): on the organism's training edits, or,
    for 'mend@TASK', on that task's train split; `overrides` are training settings ([editors.mend.train])."""
    base, _, train_task = method.partition("@")
    if base == "mend":
        from kelocate.edit.methods.mend import profile_config, train
    else:
        from kelocate.edit.methods.serac import profile_config, train
    settings = profile_config(model, **(overrides or {}))
    out = folder / "trained" / method
    marker = out / f"{base}.json"
    if marker.is_file() and json.loads(marker.read_text()).get("trained_steps") == settings.steps:
        return out  # finished earlier: its (slow to build) training data is not needed
    if train_task:
        path = (config.train_files.get(train_task) if config is not None else None) or \
            organism_split_file(model, train_task, "train")
        examples = training_edits_of(load_cases(path, train_task))
    elif model.source.get("family") != "organism":
        raise KelocateError(f"{base} needs a trained checkpoint for this model: set [editors.{base}] trained = "
                            f"\"DIR\" (see `kelocate train {base}`)")
    else:
        from kelocate.organism import world_file
        from kelocate.organism.world import load_world
        from kelocate.studies.knowedit.edit_eval import organism_training_edits

        world = load_world(world_file(model.path))
        examples = organism_training_edits(model, world, draws=8 if base == "serac" else 1)
    log(f"training {base} for the study into {out} ({len(examples)} edits; resumable) ...")
    train(model, examples, out, settings)
    return out


def organism_split_file(model, task: str, split: str) -> str:
    """The organism export's file of one task and split."""
    folder = organism_knowedit_dir(model)
    entry = json.loads((folder / "manifest.json").read_text())["files"].get(f"{task}/{split}")
    if entry is None:
        raise KelocateError(f"the organism export has no {task} {split} split; use split = \"test\" or \"train\"")
    return str(folder / entry["path"])


def curve_point(model, edited: Sequence[EditCase], befores: Sequence[Baseline]) -> dict[str, Any]:
    """After k sequential edits: the mean teacher-forced columns over the k cases edited so far (do the
    early edits still hold, and their neighbours? Neighbours that one of the k edits changes on purpose are
    left out)."""
    scores = teacher_forced_many(model, edited, befores, edited=edited_prompts(edited))
    point: dict[str, Any] = {"edits": len(edited)}
    for column in ("edit_tf", "rephrase_tf", "portability_tf", "locality_tf"):
        values = [s[column] for s in scores if column in s]
        point[column] = sum(values) / len(values) if values else None
    return point


def general_set(config: StudyConfig, model, cases: Sequence[EditCase]):
    """What general ability is measured on (None when the study does not measure it): the organism's own
    facts of subjects no case edits and their held-out statements, or the config's files."""
    if not config.general:
        return None
    from kelocate.studies.knowedit.general import load_general_set, organism_general_set

    if config.general_facts or config.general_text:
        return load_general_set(config.general_facts, config.general_text)
    if model.source.get("family") != "organism":
        raise KelocateError("general = true needs general_facts and/or general_text files for this model")
    from kelocate.organism import world_file
    from kelocate.organism.world import load_world

    return organism_general_set(model, load_world(world_file(model.path)), {c.subject for c in cases},
                                seed=config.seed)


def run_unit(model, chosen, unit: Unit, cases: Sequence[EditCase], befores: Mapping[int, Baseline],
             settings: MetricSettings, curve: Sequence[int] = (), general=None,
             edited_one: Callable[[int, int], None] = lambda done, total: None) -> dict[str, Any]:
    """Edit, score and revert one unit; a failure is recorded with its error, never dropped. In sequential
    mode the row also holds the curve: the scores after each of the `curve` edit counts, with general
    ability (`general`, a GeneralSet) there and before the first edit; `edited_one(k, n)` is called after
    each of its edits (a 470-edit unit runs for minutes)."""
    from kelocate import locate_then_edit as pipeline
    from kelocate.edit.record import revert_all
    from kelocate.studies.knowedit.general import general_ability

    row: dict[str, Any] = {"unit": unit.key, "method": unit.method, "task": unit.task, "mode": unit.mode,
                           "cases": [list(cases[i].source) for i in unit.cases]}
    organism = model.source.get("family") == "organism"
    records = []
    try:
        requests = [request_of(cases[i]) for i in unit.cases]
        if unit.mode == "batch" and len(requests) > 1:
            records.append(pipeline.edit(model, chosen, requests))
        else:
            edited = [cases[i] for i in unit.cases]
            if unit.mode == "sequential" and general is not None:
                row["general_before"] = general_ability(model, general)
            for k, request in enumerate(requests, 1):
                records.append(pipeline.edit(model, chosen, request))
                edited_one(k, len(requests))
                if unit.mode == "sequential" and (k in curve or k == len(requests)):
                    point = curve_point(model, edited[:k], [befores[i] for i in unit.cases[:k]])
                    if general is not None:
                        point |= general_ability(model, general)
                    row.setdefault("curve", []).append(point)
        together = [cases[i] for i in unit.cases]
        row["scores"] = [score_case(model, cases[i], befores[i], settings, organism, together) for i in unit.cases]
        row["status"] = "ok"
    except KelocateError as exc:
        row["status"], row["error"] = "failed", str(exc)
    finally:
        revert_all(records)
    return row


def environment(model) -> dict[str, Any]:
    """Package versions, the device and the model, saved beside the results."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("kelocate", "torch", "transformers", "transformer-lens", "peft", "numpy"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": packages,
            "device": str(model.device), "dtype": str(model.dtype), "model": model.name,
            "fingerprint": model.fingerprint, "threads": __import__("torch").get_num_threads()}


def same_config(saved: Mapping[str, Any], resolved: Mapping[str, Any]) -> bool:
    """Whether a saved study config is this one; a setting added to kelocate after the run was saved counts
    as its default (an upgrade does not orphan a half-finished study)."""
    defaults = asdict(StudyConfig())
    return set(saved) <= set(resolved) and all(saved.get(key, defaults[key]) == value
                                               for key, value in resolved.items())


def edit_progress(progress: Callable[[int, int, str], None] | None, finished: int, total: int,
                  unit: Unit) -> Callable[[int, int], None]:
    """Progress within a unit of several edits: the detail says which edit it is at."""
    def edited_one(k: int, n: int) -> None:
        if progress is not None and n > 1:
            progress(finished, total, f"{unit.method} on {unit.task}: edit {k}/{n}")
    return edited_one


def run_study(config: StudyConfig, out: str | Path, progress: Callable[[int, int, str], None] | None = None,
              log: Callable[[str], None] = lambda text: None, executor: str = "serial",
              workers: int = 2, retry_failed: bool = False) -> dict[str, Any]:
    """Run (or resume) a study into folder `out`; returns counts of units done, skipped and failed. `executor`
    "ray" runs the units on `workers` Ray actors (kelocate.studies.knowedit.ray_executor) instead of in this process.
    A rerun skips every unit with a row, failed ones too, unless `retry_failed` (their new row is appended;
    readers keep a unit's last row)."""
    from kelocate.loading import load_model

    folder = Path(out)
    resolved = asdict(config)
    study_file = folder / STUDY
    if study_file.is_file() and not same_config(json.loads(study_file.read_text()).get("config", {}), resolved):
        raise KelocateError(f"{folder} holds a study run with another config; pass another --out (or the same "
                            "config to resume it)")
    model = load_model(config.model)
    files = task_files(config, model)
    loaded = {task: load_cases(files[task], task) for task in config.tasks}
    units = plan(config, loaded)
    with os_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    if not study_file.is_file():
        write_text(study_file, json.dumps({"config": resolved, "environment": environment(model)}, indent=2))
    store = ResultsStore(folder)
    done = {row["unit"] for row in store.rows(repair=True) if row["status"] == "ok" or not retry_failed}
    todo = [u for u in units if u.key not in done]
    settings = MetricSettings(generation=config.generation, fluency=config.fluency, seed=config.seed)
    if executor == "ray":
        from kelocate.studies.knowedit.ray_executor import run_with_ray

        failed = run_with_ray(config, todo, files, store, settings, progress, model=model, folder=folder, log=log,
                              workers=workers, finished=len(done), total=len(units))
        return {"units": len(units), "skipped": len(done), "ran": len(todo), "failed": failed, "out": str(folder)}
    befores: dict[str, dict[int, Baseline]] = {}
    generals: dict[str, Any] = {}
    failed, finished = 0, len(done)
    if progress is not None:
        progress(finished, len(units), "starting")  # the clock starts now, not at the first unit's end
    for method in dict.fromkeys(u.method for u in todo):
        editors: dict[str, Any] = {}
        began, count = time.perf_counter(), 0
        for unit in [u for u in todo if u.method == method]:
            if unit.task not in befores:
                loaded[unit.task], befores[unit.task], generals[unit.task] = task_state(config, model,
                                                                                        loaded[unit.task], settings)
            cases = loaded[unit.task]
            if unit.task not in editors:
                editors[unit.task] = make_editor(method, config, list(selected_cases(config, cases).values()),
                                                 model, folder, log)
            start = time.perf_counter()
            row = run_unit(model, editors[unit.task], unit, cases, befores[unit.task], settings, config.curve,
                           generals[unit.task], edit_progress(progress, finished, len(units), unit))
            store.append(row, time.perf_counter() - start)
            failed += row["status"] != "ok"
            finished, count = finished + 1, count + 1
            if progress is not None:
                rate = count / (time.perf_counter() - began)
                progress(finished, len(units), f"{method}: {rate * 60:.1f} units/min")
    return {"units": len(units), "skipped": len(done), "ran": len(todo), "failed": failed, "out": str(folder)}


def load_cases(path: str, task: str) -> list[EditCase]:
    """A task file's cases (skipped records are reported by `kelocate study validate`)."""
    import warnings

    from kelocate.data.knowedit import KnowEditSkipWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KnowEditSkipWarning)
        return list(load_knowedit(path, task if task in FORMATS else None))


def read_results(path: str | Path) -> list[dict]:
    """The rows of a results file (a folder or the results.jsonl itself), one per unit: its last (a failed
    unit retried with --retry-failed has two)."""
    path = Path(path)
    store = ResultsStore(path if path.is_dir() else path.parent)
    if not store.path.is_file():
        raise KelocateError(f"no {RESULTS} in {str(path)!r}; pass the --out folder of `kelocate study run`")
    return list({row["unit"]: row for row in store.rows()}.values())

