"""Where a study's units run: in this process (serial) or on Ray actors, through ONE loop.

`StudyWorker` holds one loaded model and what its units reuse: each task's cases and baseline (taken the
first time a unit of the task comes) and the current method's editors; `run(unit)` is `unit.run_unit` on
them. The serial executor runs one worker in this process, on the model the runner loaded; the Ray executor
makes each `StudyWorker` an actor (one torch thread, its own model) and does nothing else there.

`run_units` is the loop both share. It keeps every worker busy (whichever finishes gets the next unit), and
only it writes: each finished row is appended to the results store as it comes (so a killed run resumes),
and progress is reported as `progress(done, total, detail)`. A unit whose run raises (anything but the
failures `run_unit` records in its row: a bug, or a Ray worker dying) is tried once more, on another worker
where there is one; a worker that raised reloads its model first (an edit may have stopped half-way) and a
dead Ray worker is replaced. A unit that fails twice is recorded as a failed row with its error: no unit is
dropped. Units are handed out one at a time as workers finish (`ray.wait`), never split up front.

MEND and SERAC are trained before the loop (`training.with_trained`); workers only load checkpoints.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from kelocate.data.knowedit import EditCase
from kelocate.errors import KelocateError
from kelocate.studies.knowedit.config import StudyConfig
from kelocate.studies.knowedit.metrics import MetricSettings
from kelocate.studies.knowedit.plan import Unit, selected_cases, study_cases
from kelocate.studies.knowedit.store import ResultsStore
from kelocate.studies.knowedit.unit import make_editor, run_unit, task_state, unit_row

TRIES = 2  # a unit that raises is tried once more before it is recorded as failed

Progress = Callable[[int, int, str], None]


class StudyWorker:
    """One loaded model running units: each task's cases and baseline (taken once), the current method's
    editors (built the first time a unit needs them)."""

    def __init__(self, config: StudyConfig, source: str | None, files: Mapping[str, str],
                 settings: MetricSettings, model=None, loaded: Mapping[str, Sequence[EditCase]] | None = None,
                 threads: int | None = None) -> None:
        """`model` and `loaded` (task -> its file's cases) when the caller has them, else they are loaded from
        `source` and `files`; `threads` sets torch's threads (a Ray actor runs on one)."""
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self.config, self.source, self.files, self.settings = config, source, dict(files), settings
        self.loaded = dict(loaded or {})
        self.cases: dict[str, list[EditCase]] = {}  # task -> its cases as the study edits them
        self.befores: dict[str, dict] = {}  # task -> case index -> Baseline
        self.generals: dict[str, Any] = {}
        self.editors: dict[str, Any] = {}  # task -> the current method's editor
        self.method: str | None = None
        self.model = model if model is not None else self._load()

    def _load(self):
        from kelocate.loading import load_model

        return load_model(self.source)

    def ready(self) -> int:
        """The worker's process id (once its model is loaded)."""
        return os.getpid()

    def run(self, unit: Unit, edited_one: Callable[[int, int], None] | None = None) -> tuple[dict[str, Any], float]:
        """The unit's row (as `run_unit` makes it) and the seconds its edit and scoring took."""
        try:
            if unit.task not in self.cases:
                cases = study_cases(self.config, self.files, unit.task, self.loaded)
                self.cases[unit.task], self.befores[unit.task], self.generals[unit.task] = task_state(
                    self.config, self.model, cases, self.settings)
            cases = self.cases[unit.task]
            if unit.method != self.method:  # methods come one after another: the last one's editors go
                self.editors.clear()
                self.method = unit.method
            if unit.task not in self.editors:
                self.editors[unit.task] = make_editor(unit.method, self.config,
                                                      list(selected_cases(self.config, cases).values()))
            start = time.perf_counter()
            row = run_unit(self.model, self.editors[unit.task], unit, cases, self.befores[unit.task],
                           self.settings, self.config.curve, self.generals[unit.task],
                           edited_one or (lambda done, total: None))
            return row, time.perf_counter() - start
        except Exception:
            # an edit may have stopped half-way: the next unit gets the model as loaded (baselines stay valid,
            # they are the unedited model's), and editors built afresh
            self.editors.clear()
            self.model = self._load()
            raise


@dataclasses.dataclass
class _Job:
    unit: Unit
    tries: int = 0
    avoid: int | None = None  # the worker it last failed on


@dataclasses.dataclass
class _Failure:
    """A unit's run that raised: the error, one line."""

    error: str


Outcome = tuple[dict[str, Any], float] | _Failure  # (row, seconds), or the error of a run that raised


class Pool(Protocol):
    """Workers `run_units` hands units to: `size` slots, `start` a unit on a free slot, `wait` for any running
    one to finish (its slot and outcome); `label` names the workers in progress details."""

    size: int

    def label(self, unit: Unit) -> str: ...

    def start(self, slot: int, unit: Unit, finished: int) -> None: ...

    def wait(self) -> tuple[int, Outcome]: ...


class SerialPool:
    """One worker in this process: a unit runs when the loop waits for it, with progress within the unit."""

    def __init__(self, worker: StudyWorker, progress: Progress | None, total: int) -> None:
        self.worker, self.progress, self.total = worker, progress, total
        self.size = 1
        self._started: tuple[int, Unit, int] | None = None

    def label(self, unit: Unit) -> str:
        return unit.method

    def start(self, slot: int, unit: Unit, finished: int) -> None:
        self._started = (slot, unit, finished)

    def wait(self) -> tuple[int, Outcome]:
        assert self._started is not None
        (slot, unit, finished), self._started = self._started, None
        try:
            return slot, self.worker.run(unit, edit_progress(self.progress, finished, self.total, unit))
        except Exception as exc:
            return slot, _Failure(one_line(exc))


class RayPool:
    """`size` Ray actors, each a `StudyWorker` on one torch thread; a dead one is replaced."""

    def __init__(self, ray, size: int, args: tuple, log: Callable[[str], None]) -> None:
        self.ray, self.log, self.size = ray, log, size
        self.remote = ray.remote(num_cpus=1)(StudyWorker)
        self.args = args
        self.actors = [self._actor() for _ in range(size)]
        self.running: dict[Any, tuple[int, Unit]] = {}  # object ref -> (slot, unit)
        try:
            ray.get([a.ready.remote() for a in self.actors])
        except ray.exceptions.RayError as exc:
            raise KelocateError(f"the Ray workers could not start: {one_line(_cause(exc))}") from None

    def _actor(self):
        return self.remote.remote(*self.args, threads=1)

    def label(self, unit: Unit) -> str:
        return f"{self.size} Ray workers"

    def start(self, slot: int, unit: Unit, finished: int) -> None:
        self.running[self.actors[slot].run.remote(unit)] = (slot, unit)

    def wait(self) -> tuple[int, Outcome]:
        ray = self.ray
        (ref,), _ = ray.wait(list(self.running), num_returns=1)
        slot, unit = self.running.pop(ref)
        try:
            return slot, ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self.log(f"Ray worker {slot} died running {unit.key}; starting a new one")
            ray.kill(self.actors[slot], no_restart=True)  # frees its CPU if it only became unreachable
            self.actors[slot] = self._actor()
            return slot, _Failure(f"its Ray worker died ({type(exc).__name__})")
        except ray.exceptions.RayError as exc:
            return slot, _Failure(one_line(_cause(exc)))


def run_units(pool: Pool, todo: Sequence[Unit], loaded: Mapping[str, Sequence[EditCase]], store: ResultsStore,
              progress: Progress | None, log: Callable[[str], None], finished: int, total: int) -> int:
    """Run `todo` on the pool's workers, appending each row to `store` as it finishes; returns the number of
    failed units. `loaded` (task -> cases) names the cases of a unit that failed twice; `finished` and
    `total` count the study's units for `progress(done, total, detail)`."""
    pending = collections.deque(_Job(unit) for unit in todo)
    idle = list(range(pool.size))
    running: dict[int, _Job] = {}
    failed = 0
    rate_of: dict[str, list[float]] = {}  # label -> [units, first start]

    def take(slot: int) -> _Job | None:
        for job in pending:
            if job.avoid != slot or pool.size == 1:  # a retry goes to another worker where there is one
                pending.remove(job)
                return job
        # only units that failed on this worker are left: wait for another worker, unless none is busy
        return pending.popleft() if pending and not running else None

    while pending or running:
        for slot in list(idle):
            job = take(slot)
            if job is not None:
                idle.remove(slot)
                running[slot] = job
                rate_of.setdefault(pool.label(job.unit), [0, time.perf_counter()])
                pool.start(slot, job.unit, finished)
        slot, outcome = pool.wait()
        job = running.pop(slot)
        idle.append(slot)
        label = pool.label(job.unit)
        if not isinstance(outcome, _Failure):
            row, seconds = outcome
            store.append(row, seconds)
            failed += row["status"] != "ok"
            finished += 1
            rate_of[label][0] += 1
            if progress is not None:
                count, began = rate_of[label]
                progress(finished, total, f"{label}: {count / (time.perf_counter() - began) * 60:.1f} units/min")
            continue
        job.tries += 1
        if job.tries < TRIES:
            log(f"{job.unit.key} failed ({outcome.error}); retrying it")
            pending.appendleft(_Job(job.unit, job.tries, slot))
            continue
        store.append({**unit_row(job.unit, loaded[job.unit.task]), "status": "failed", "error": outcome.error}, 0.0)
        log(f"{job.unit.key} failed twice; recorded as failed: {outcome.error}")
        failed, finished = failed + 1, finished + 1
        if progress is not None:
            progress(finished, total, f"{label}: {job.unit.key} failed")
    return failed


def run_serial(config: StudyConfig, todo: Sequence[Unit], files: Mapping[str, str],
               loaded: Mapping[str, Sequence[EditCase]], store: ResultsStore, settings: MetricSettings,
               progress: Progress | None, log: Callable[[str], None], *, model, finished: int, total: int) -> int:
    """Run the `todo` units in this process on `model`; returns the number of failed units."""
    if progress is not None:
        progress(finished, total, "starting")  # the clock starts now, not at the first unit's end
    worker = StudyWorker(config, config.model, files, settings, model=model, loaded=loaded)
    return run_units(SerialPool(worker, progress, total), todo, loaded, store, progress, log, finished, total)


def run_with_ray(config: StudyConfig, todo: Sequence[Unit], files: Mapping[str, str],
                 loaded: Mapping[str, Sequence[EditCase]], store: ResultsStore, settings: MetricSettings,
                 progress: Progress | None, log: Callable[[str], None], *, workers: int = 2, finished: int = 0,
                 total: int) -> int:
    """Run the `todo` units on `workers` Ray actors; returns the number of failed units. Uses the Ray already
    initialised in this process, else starts a local one for the run and shuts it down afterwards."""
    ray = require_ray(workers)
    if not todo:
        return 0
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 logging_level=logging.WARNING)
    try:
        n = min(workers, len(todo), max(1, int(ray.cluster_resources().get("CPU", workers))))
        pool = RayPool(ray, n, (config, _worker_source(config.model), dict(files), settings), log)
        log(f"running {len(todo)} units on {n} Ray workers")
        return run_units(pool, todo, loaded, store, progress, log, finished, total)
    finally:
        if started:
            ray.shutdown()


def require_ray(workers: int = 1):
    """The ray module, or one line of error saying how to install it (and a worker count below 1 refused)."""
    try:
        import ray
    except ImportError:
        raise KelocateError("the ray executor needs ray: pip install 'kelocate[ray]'") from None
    if workers < 1:
        raise KelocateError(f"workers must be at least 1, got {workers}")
    return ray


def edit_progress(progress: Progress | None, finished: int, total: int, unit: Unit) -> Callable[[int, int], None]:
    """Progress within a unit of several edits: the detail says which edit it is at."""
    def edited_one(k: int, n: int) -> None:
        if progress is not None and n > 1:
            progress(finished, total, f"{unit.method} on {unit.task}: edit {k}/{n}")
    return edited_one


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


def one_line(exc: BaseException, limit: int = 500) -> str:
    """An exception as one line: its type and message, at most `limit` characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["StudyWorker", "require_ray", "run_serial", "run_units", "run_with_ray"]
