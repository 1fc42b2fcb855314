"""The study runner's Ray executor: the units of a study on a local Ray, one actor per worker.

Each actor loads the model once (one torch thread, like the serial runner's one process), reads a task's
cases, takes its baseline and builds each (method, task) editor the first time a unit needs them, and runs
units with `run_unit`, so a row is what the serial runner computes. Units are handed out as actors finish
(`ray.wait`), never split up front. Only the driver writes: it appends each finished row to results.jsonl
(so a killed run resumes like a serial one) and reports progress. MEND and SERAC are trained by the driver
before any dispatch; actors receive the trained folders through the editor settings and never train.

A unit whose run raises (anything but the failures `run_unit` records in its row, or its worker dying) is
retried once, on another actor where there is one; an actor that raised reloads its model first (an edit
may have stopped half-way), a dead one is replaced. A unit that fails twice is recorded as a failed row
with its error: no unit is dropped.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kelocate.errors import KelocateError
from kelocate.studies.knowedit.metrics import MetricSettings
from kelocate.studies.knowedit.runner import (
    ResultsStore,
    StudyConfig,
    Unit,
    load_cases,
    make_editor,
    run_unit,
    selected_cases,
    task_state,
    train_for_study,
)

TRIES = 2  # a unit that raises is tried once more before it is recorded as failed


class StudyWorker:
    """A Ray actor's state: the model (loaded once), each task's cases and baseline, each editor."""

    def __init__(self, config: StudyConfig, source: str | None, files: dict[str, str], settings: MetricSettings,
                 folder: str) -> None:
        import torch

        torch.set_num_threads(1)
        self.config, self.source, self.files, self.settings = config, source, files, settings
        self.folder = Path(folder)
        self.cases: dict[str, list] = {}
        self.befores: dict[str, dict] = {}  # task -> case index -> Baseline
        self.generals: dict[str, Any] = {}
        self.editors: dict[tuple[str, str], Any] = {}
        self.model = self._load()

    def _load(self):
        from kelocate.loading import load_model

        return load_model(self.source)

    def ready(self) -> int:
        return os.getpid()

    def run(self, unit: Unit) -> tuple[dict[str, Any], float]:
        """The unit's row (as `run_unit` makes it) and the seconds its edit and scoring took."""
        try:
            if unit.task not in self.cases:
                self.cases[unit.task], self.befores[unit.task], self.generals[unit.task] = task_state(
                    self.config, self.model, load_cases(self.files[unit.task], unit.task), self.settings)
            cases = self.cases[unit.task]
            key = (unit.method, unit.task)
            if key not in self.editors:
                self.editors[key] = make_editor(unit.method, self.config,
                                                list(selected_cases(self.config, cases).values()), self.model,
                                                self.folder, lambda text: None)
            start = time.perf_counter()
            row = run_unit(self.model, self.editors[key], unit, cases, self.befores[unit.task], self.settings,
                           self.config.curve, self.generals[unit.task])
            return row, time.perf_counter() - start
        except BaseException:
            # an edit may have stopped half-way: the next unit gets the model as loaded (baselines stay valid,
            # they are the unedited model's), and editors built afresh
            self.editors.clear()
            self.model = self._load()
            raise


@dataclasses.dataclass
class _Job:
    unit: Unit
    tries: int = 0
    avoid: int | None = None  # the actor it last failed on


def run_with_ray(config: StudyConfig, todo: Sequence[Unit], files: dict[str, str], store: ResultsStore,
                 settings: MetricSettings, progress: Callable[[int, int, str], None] | None = None, *, model,
                 folder: str | Path, log: Callable[[str], None] = lambda text: None, workers: int = 2,
                 finished: int = 0, total: int | None = None) -> int:
    """Run the `todo` units on `workers` Ray actors, appending each row to `store` as it finishes; returns the
    number of failed units. `model` is the driver's loaded model (MEND/SERAC are trained on it here);
    `finished` and `total` count the study's units for `progress(done, total, detail)`. Uses the Ray already
    initialised in this process, else starts a local one for the run and shuts it down afterwards."""
    try:
        import ray
    except ImportError:
        raise KelocateError("the ray executor needs ray: pip install 'kelocate[ray]'") from None
    if workers < 1:
        raise KelocateError(f"workers must be at least 1, got {workers}")
    if not todo:
        return 0
    total = finished + len(todo) if total is None else total
    config = _with_trained(config, todo, model, Path(folder), log)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 logging_level=logging.WARNING)
    try:
        n = min(workers, len(todo), max(1, int(ray.cluster_resources().get("CPU", workers))))
        remote = ray.remote(num_cpus=1)(StudyWorker)
        args = (config, _worker_source(config.model), dict(files), settings, str(Path(folder).resolve()))
        actors = [remote.remote(*args) for _ in range(n)]
        try:
            ray.get([a.ready.remote() for a in actors])
        except ray.exceptions.RayError as exc:
            raise KelocateError(f"the Ray workers could not start: {_one_line(_cause(exc))}") from None
        log(f"running {len(todo)} units on {n} Ray workers")
        return _dispatch(ray, actors, lambda: remote.remote(*args), todo, files, store, progress, log, finished,
                         total)
    finally:
        if started:
            ray.shutdown()


def _dispatch(ray, actors: list, new_actor: Callable[[], Any], todo: Sequence[Unit], files: dict[str, str],
              store: ResultsStore, progress, log, finished: int, total: int) -> int:
    """Keep every actor busy: whichever finishes gets the next unit (a retry goes first, to another actor)."""
    pending = collections.deque(_Job(unit) for unit in todo)
    idle = list(range(len(actors)))
    running: dict[Any, tuple[int, _Job]] = {}
    cases: dict[str, list] = {}  # the driver's copy, only for the rows of units that failed twice
    failed, count, began = 0, 0, time.perf_counter()

    def take(index: int) -> _Job | None:
        for job in pending:
            if job.avoid != index:
                pending.remove(job)
                return job
        # only units that failed on this actor are left: wait for another actor, unless none is busy
        return pending.popleft() if pending and not running else None

    while pending or running:
        for index in list(idle):
            job = take(index)
            if job is not None:
                idle.remove(index)
                running[actors[index].run.remote(job.unit)] = (index, job)
        (ref,), _ = ray.wait(list(running), num_returns=1)
        index, job = running.pop(ref)
        idle.append(index)
        try:
            row, seconds = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            error = f"its Ray worker died ({type(exc).__name__})"
            log(f"Ray worker {index} died running {job.unit.key}; starting a new one")
            ray.kill(actors[index], no_restart=True)  # frees its CPU if it only became unreachable
            actors[index] = new_actor()
        except ray.exceptions.RayError as exc:
            error = _one_line(_cause(exc))
        else:
            store.append(row, seconds)
            failed += row["status"] != "ok"
            finished, count = finished + 1, count + 1
            if progress is not None:
                rate = count / (time.perf_counter() - began)
                progress(finished, total, f"{len(actors)} Ray workers: {rate * 60:.1f} units/min")
            continue
        job.tries += 1
        if job.tries < TRIES:
            log(f"{job.unit.key} failed ({error}); retrying it")
            pending.appendleft(_Job(job.unit, job.tries, index))
            continue
        unit = job.unit
        if unit.task not in cases:
            cases[unit.task] = load_cases(files[unit.task], unit.task)
        store.append({"unit": unit.key, "method": unit.method, "task": unit.task, "mode": unit.mode,
                      "cases": [list(cases[unit.task][i].source) for i in unit.cases], "status": "failed",
                      "error": error}, 0.0)
        log(f"{unit.key} failed twice; recorded as failed: {error}")
        failed, finished = failed + 1, finished + 1
        if progress is not None:
            progress(finished, total, f"{len(actors)} Ray workers: {unit.key} failed")
    return failed


def _with_trained(config: StudyConfig, todo: Sequence[Unit], model, folder: Path,
                  log: Callable[[str], None]) -> StudyConfig:
    """The config with every MEND/SERAC editor's `trained` folder set, training here what the study trains."""
    editors = {method: dict(values) for method, values in config.editors.items()}
    for method in dict.fromkeys(u.method for u in todo):
        base = method.partition("@")[0]
        if base in ("mend", "serac") and editors.get(method, {}).get("trained") is None:
            overrides = editors.get(base, {}).get("train", {})
            editors.setdefault(method, {})["trained"] = str(train_for_study(method, model, folder, log, config,
                                                                            overrides))
    return dataclasses.replace(config, editors=editors)


def _worker_source(source: str | None) -> str | None:
    """The model source as the workers load it: a local path made absolute (a worker's working folder is
    not necessarily the driver's)."""
    if source is None or str(source) == "organism":
        return source
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def _cause(exc: BaseException) -> BaseException:
    """The exception a Ray task raised, not Ray's wrapper of it."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _one_line(exc: BaseException, limit: int = 500) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["StudyWorker", "run_with_ray"]
