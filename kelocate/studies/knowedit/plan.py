"""A study's plan: the task files, the cases each task contributes, and the units of work.

A unit is one method on one task for one case (mode `single`), or for `n` cases edited together (`batch`)
or one after another (`sequential`). In mode `mixed` a method has one unit, on the pseudo-task `mixed`: the
selected cases of every task, interleaved by a seeded shuffle (`mixed_cases`), edited one after another.
Units are ordered methods outermost, so each method's model state (its editor, a trained checkpoint) is set
up once; its `key` names it in the results file. The cases are a
seeded sample of each task's file (in file order), narrowed to those with every `require`d field: a
sample, not the first ones, because exported files group records.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kelocate.data.knowedit import FORMATS, EditCase, KnowEditSkipWarning, load_knowedit
from kelocate.errors import KelocateError
from kelocate.studies.knowedit.config import StudyConfig

MIXED = "mixed"  # the pseudo-task of mode `mixed`: every task's selected cases in one stream


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
    from kelocate.edit.registry import method as registered

    out = []
    for method in config.methods:
        if registered(method).trainable and config.train_on:
            out += [f"{method}@{task}" for task in config.train_on]
        else:
            out.append(method)
    return out


def task_files(config: StudyConfig, model) -> dict[str, str]:
    """The file of every task: the config's, or the organism's export (written once into the cache)."""
    if config.data != "organism":
        return {t: config.files[t] for t in config.tasks}
    from kelocate.organism.datasets import organism_split_file

    return {task: config.files[task] if task in config.files else organism_split_file(model, task, config.split)
            for task in config.tasks}


def load_cases(path: str, task: str) -> list[EditCase]:
    """A task file's cases (skipped records are reported by `kelocate study validate`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KnowEditSkipWarning)
        return list(load_knowedit(path, task if task in FORMATS else None))


def study_cases(config: StudyConfig, files: Mapping[str, str], task: str,
                loaded: Mapping[str, Sequence[EditCase]] | None = None) -> list[EditCase]:
    """The cases a unit of `task` indexes into: the task file's (from `loaded` when given), or for `mixed`
    the interleaved stream of every task's selected cases."""
    loaded = loaded or {}
    if task != MIXED:
        return list(loaded[task]) if task in loaded else load_cases(files[task], task)
    per_task = {t: loaded[t] if t in loaded else load_cases(files[t], t) for t in config.tasks}
    return mixed_cases(config, per_task)


def mixed_cases(config: StudyConfig, loaded: Mapping[str, Sequence[EditCase]]) -> list[EditCase]:
    """Mode `mixed`'s stream: the selected cases of each task (`selected`, in the config's task order), shuffled
    together by the config's seed, so the tasks come "from different sets randomly" and every run (and every
    Ray worker) gets the same order."""
    stream = [loaded[task][i] for task in config.tasks for i in selected(config, loaded[task])]
    random.Random(config.seed).shuffle(stream)
    return stream


def selected(config: StudyConfig, cases: Sequence[EditCase]) -> list[int]:
    """The cases a task contributes (indices into its file): those with every `require`d field (and, for
    Sanitation, the forget questions of `sanitation_answer`, as the reference selects them by answer), all of
    them or a seeded sample of `cases` (in file order). A sample, not the first ones: exported files group records
    (the organism's put those with portability probes after the others)."""
    if config.mode == MIXED and len({case.task for case in cases}) > 1:
        return list(range(len(cases)))  # the stream: already selected per task
    eligible = [i for i, case in enumerate(cases) if all(getattr(case, name) for name in config.require)
                and (case.task != "Sanitation" or config.sanitation_answer == "all"
                     or (case.ground_truth or "").lower() == config.sanitation_answer.lower())]
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
    if config.mode == MIXED:
        stream = tuple(range(sum(len(indices) for indices in chosen.values())))
        return [Unit(method, MIXED, stream, MIXED) for method in study_methods(config)]
    size = 1 if config.mode == "single" else config.n
    out = []
    for method in study_methods(config):
        for task in config.tasks:
            out += [Unit(method, task, tuple(chosen[task][lo:lo + size]), config.mode)
                    for lo in range(0, len(chosen[task]), size)]
    return out
