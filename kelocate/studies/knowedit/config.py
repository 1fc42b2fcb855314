"""A KnowEdit study's config: the `[study]` table of a TOML file (and optional `[editors.<method>]` tables),
read into a `StudyConfig` and checked before anything runs.

Every mistake is one line of `KelocateError` naming the file and the fix, raised before a model is loaded or a
folder written: an unknown setting or method, a missing file, a mode that cannot hold the settings, and a
file without its `[study]` table or with nothing in it. An empty file is not "every default": the defaults
are the full organism study (11 editors x 6 tasks, MEND and SERAC trained first), which nobody should start
by accident. Paths in the file are resolved against the file's folder.

A saved config (`study.json` beside the results) is compared with `same_config`: a setting added to kelocate
after a run was saved counts as its default, so an upgrade does not orphan a half-finished study.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kelocate.data.knowedit import TASKS, normalize_task
from kelocate.edit.registry import OPTIONAL_METHODS, STUDY_METHODS, TRAINED
from kelocate.errors import KelocateError

# The methods come from the edit registry, in its order (the report's rows follow it): those the study runs
# by default, and those it accepts when named (IKE). `trained` is the [editors.<method>] key of a trained
# checkpoint folder (MEND, SERAC), as everywhere else.
METHODS = STUDY_METHODS
REQUIRABLE = ("ground_truth", "rephrase", "portability", "locality")
# `mixed`: the selected cases of every task interleaved (seeded) into one sequential stream per method, as the
# comprehensive study ran its Figure 4 ("from different sets randomly"); each case scored with its task's metrics.
MODES = ("single", "batch", "sequential", "mixed")
SEQUENTIAL = ("sequential", "mixed")  # the modes that edit one case after another in one unit

__all__ = ["METHODS", "MODES", "SEQUENTIAL", "OPTIONAL_METHODS", "REQUIRABLE", "TRAINED", "StudyConfig", "check_config",
           "load_config", "same_config"]


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
    harness_tasks: list[str] = field(default_factory=list)  # general: lm-eval task names (kelocate[eval])
    harness_include: str | None = None  # a folder of lm-eval task YAMLs (local tasks)
    harness_limit: int = 0  # documents per lm-eval task (0: all)
    metrics: list[str] = field(default_factory=lambda: ["kelocate"])  # metric profiles: kelocate, easyedit
    requests: str = "kelocate"  # how ConvSent edits are asked: kelocate's or the reference's (easyedit)
    sanitation_answer: str = "all"  # Sanitation's forget questions: all, or those of one answer (e.g. "paris")
    # the text ROME, MEMIT, PMET and AlphaEdit take key statistics over: "model" (the organism's own training
    # text, else text the model generates) or a file (one text per line); [editors.X] corpus overrides it
    corpus: str = "model"
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
    known = {f for f in StudyConfig.__dataclass_fields__ if f != "editors"}
    stray = sorted(set(raw) - {"study", "editors"})
    if stray:
        fix = "put it under [study]" if stray[0] in known else f"known [study] settings: {', '.join(sorted(known))}"
        raise KelocateError(f"{path}: unknown top-level setting {stray[0]!r}; {fix}")
    study, editors = raw.get("study"), raw.get("editors", {})
    if study is None or study == {}:
        raise KelocateError(f"{path} has {'no' if study is None else 'an empty'} [study] table; add [study] with "
                            "the methods and tasks to run, e.g. methods = [\"rome\"] and tasks = [\"ZsRE\"] (see "
                            "studies/organism_smoke.toml)")
    if not isinstance(study, dict) or not isinstance(editors, dict):
        name = "study" if not isinstance(study, dict) else "editors"
        raise KelocateError(f"{path}: {name} must be a table ([{name}]); fix the file")
    unknown = sorted(set(study) - known)
    if unknown:
        raise KelocateError(f"{path}: unknown setting {unknown[0]!r}; known [study] settings: "
                            f"{', '.join(sorted(known))}")
    _check_types(path, study)
    config = StudyConfig(**study, editors=dict(editors))
    base = path.parent
    config.files = {normalize_task(t): str((base / f).resolve()) for t, f in config.files.items()}
    return check_config(config, base)


_KINDS = {list: "a list", dict: "a table", int: "an integer", bool: "true or false", str: "a string"}


def _check_types(path: Path, study: Mapping[str, Any]) -> None:
    """Each [study] setting of the type its default has (a string where the default is None)."""
    defaults = StudyConfig()
    for key, value in study.items():
        default = getattr(defaults, key)
        kind = str if default is None else type(default)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise KelocateError(f"{path}: [study] {key} must be {_KINDS[kind]}, got {value!r}; fix the file")


def check_config(config: StudyConfig, base: Path = Path(".")) -> StudyConfig:
    """Canonical names, and one line of error for anything that cannot run."""
    bad = [m for m in config.methods if m not in METHODS and m not in OPTIONAL_METHODS]  # 'mend@TASK': train_on
    if bad:
        raise KelocateError(f"unknown method {bad[0]!r} in the study; use some of "
                            f"{', '.join((*METHODS, *OPTIONAL_METHODS))}")
    config.tasks = [normalize_task(t) for t in config.tasks]
    config.train_on = [normalize_task(t) for t in config.train_on]
    config.train_files = {normalize_task(t): str((base / f).resolve()) for t, f in config.train_files.items()}
    if config.data != "organism" and any(t not in config.train_files for t in config.train_on):
        raise KelocateError("train_on needs train_files = {TASK = \"path\"} for a model other than the organism")
    bad = [f for f in config.require if f not in REQUIRABLE]
    if bad:
        raise KelocateError(f"cannot require {bad[0]!r} of a case; use some of {', '.join(REQUIRABLE)}")
    from kelocate.studies.knowedit.easyedit_metrics import PROFILES

    bad = [m for m in config.metrics if m not in PROFILES]
    if bad or not config.metrics:
        raise KelocateError(f"unknown metric profile {bad[0] if bad else '(none)'!r}; use kelocate and/or easyedit")
    if config.requests not in PROFILES:
        raise KelocateError(f"unknown requests {config.requests!r}; use kelocate (ConvSent asks for the opinion the "
                            "model does not hold) or easyedit (the reference's instruction and seeded direction)")
    if config.mode not in MODES:
        raise KelocateError(f"unknown mode {config.mode!r}; use single, batch, sequential or mixed")
    if config.cases < 1 or config.n < 1:
        raise KelocateError("cases and n must be at least 1")
    if config.mode == "single" and config.n != 1:
        raise KelocateError("mode 'single' edits one case per unit; use mode 'batch' or 'sequential' with n")
    if config.mode == "mixed" and config.n != 1:
        raise KelocateError("mode 'mixed' edits every selected case of every task in one stream; set the cases per "
                            "task with cases (and the scored points with curve), not n")
    if config.mode == "mixed" and len(config.tasks) < 2:
        raise KelocateError("mode 'mixed' interleaves the cases of several tasks; list two or more tasks (or use "
                            "mode 'sequential')")
    if config.data != "organism":
        missing = [t for t in config.tasks if t not in config.files]
        if missing:
            raise KelocateError(f"no file for task {missing[0]}: give [study] files = {{{missing[0]} = \"path\"}} "
                                "or data = \"organism\"")
    if config.general and config.mode not in SEQUENTIAL:
        raise KelocateError("general = true measures general ability after sequential edits; set mode = "
                            "\"sequential\" or \"mixed\"")
    if config.harness_tasks and not config.general:
        raise KelocateError("harness_tasks are a general-ability measure; set general = true (and mode = "
                            "\"sequential\" or \"mixed\")")
    if config.harness_limit < 0:
        raise KelocateError(f"harness_limit must be 0 (every document) or more, got {config.harness_limit}")
    if config.harness_include is not None:
        folder = (base / config.harness_include).resolve()
        if not folder.is_dir():
            raise KelocateError(f"harness_include folder {str(folder)!r} does not exist; fix [study] "
                                "harness_include")
        config.harness_include = str(folder)
    for key in ("general_facts", "general_text"):
        if getattr(config, key) is not None:
            setattr(config, key, _existing_file(base, getattr(config, key), key, f"[study] {key}"))
    if config.corpus != "model":
        config.corpus = _existing_file(base, config.corpus, "corpus", "[study] corpus (or \"model\")")
    for path in config.files.values():
        if not Path(path).is_file():
            raise KelocateError(f"task file {path!r} does not exist; fix [study] files")
    for method, settings in config.editors.items():
        if not isinstance(settings, dict):
            raise KelocateError(f"[editors.{method}] must be a table of settings")
        for key in (TRAINED, "config_file"):  # paths, relative to the config's folder
            if key in settings:
                settings[key] = str((base / settings[key]).resolve())
        corpus = settings.get("corpus")
        if corpus is not None:  # a file of texts ("model": the model's own text, as [study] corpus)
            if not isinstance(corpus, str):
                raise KelocateError(f"[editors.{method}] corpus must be a file path or \"model\", got {corpus!r}")
            if corpus == "model":
                settings.pop("corpus")
            else:
                settings["corpus"] = _existing_file(base, corpus, "corpus", f"[editors.{method}] corpus")
    return config


def _existing_file(base: Path, value: str, name: str, where: str) -> str:
    """`value` resolved against the config's folder; one line of error naming the setting when no file is there."""
    path = (base / value).resolve()
    if not path.is_file():
        raise KelocateError(f"{name} file {str(path)!r} does not exist; fix {where}")
    return str(path)


def same_config(saved: Mapping[str, Any], resolved: Mapping[str, Any]) -> bool:
    """Whether a saved study config is this one; a setting added to kelocate after the run was saved counts
    as its default (an upgrade does not orphan a half-finished study)."""
    defaults = asdict(StudyConfig())
    return set(saved) <= set(resolved) and all(saved.get(key, defaults[key]) == value
                                               for key, value in resolved.items())
