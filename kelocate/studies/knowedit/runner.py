"""The KnowEdit study runner: a study config -> units of work -> one JSON line per finished unit.

`run_study` is the whole run, in the order that keeps a mistake from costing anything: refuse a folder of
another config, load the model, read the task files and plan the units (a task without a case is an
error here, before any folder is written), save the config and the environment, skip the units already in
the results file, train what the remaining units need (MEND, SERAC), then hand the units to an executor
(`executors`: serial, or Ray actors; one loop either way). The package docstring lists the other modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kelocate.errors import KelocateError
from kelocate.studies.knowedit.config import StudyConfig
from kelocate.studies.knowedit.metrics import MetricSettings
from kelocate.studies.knowedit.plan import MIXED, load_cases, mixed_cases, plan, task_files
from kelocate.studies.knowedit.store import check_folder, open_folder
from kelocate.studies.knowedit.training import with_trained

EXECUTORS = ("serial", "ray")


def run_study(config: StudyConfig, out: str | Path, progress: Callable[[int, int, str], None] | None = None,
              log: Callable[[str], None] = lambda text: None, executor: str = "serial",
              workers: int = 2, retry_failed: bool = False) -> dict[str, Any]:
    """Run (or resume) a study into folder `out`; returns counts of units done, skipped and failed. `executor`
    "ray" runs the units on `workers` Ray actors instead of in this process. A rerun skips every unit with a
    row, failed ones too, unless `retry_failed` (their new row is appended; readers keep a unit's last row).
    `progress(done, total, detail)` is called as units finish; `log` gets one-line notes (training, retries)."""
    from kelocate.loading import load_model
    from kelocate.studies.knowedit.executors import require_ray, run_serial, run_with_ray

    if executor not in EXECUTORS:
        raise KelocateError(f"unknown executor {executor!r}; use serial or ray")
    if executor == "ray":
        require_ray(workers)  # before anything is loaded, trained or written
    folder = Path(out)
    resolved = asdict(config)
    check_folder(folder, resolved)
    model = load_model(config.model)
    files = task_files(config, model)
    loaded = {task: load_cases(files[task], task) for task in config.tasks}
    if config.mode == MIXED:
        loaded[MIXED] = mixed_cases(config, loaded)
    units = plan(config, loaded)
    store = open_folder(folder, resolved, model)
    done = {row["unit"] for row in store.rows(repair=True) if row["status"] == "ok" or not retry_failed}
    todo = [u for u in units if u.key not in done]
    summary = {"units": len(units), "skipped": len(done), "ran": len(todo), "failed": 0, "out": str(folder)}
    config = with_trained(config, todo, model, folder, log)
    settings = MetricSettings(generation=config.generation, fluency=config.fluency, seed=config.seed,
                              profiles=tuple(config.metrics))
    run = run_with_ray if executor == "ray" else run_serial
    extra = {"workers": workers} if executor == "ray" else {"model": model}
    summary["failed"] = run(config, todo, files, loaded, store, settings, progress, log, finished=len(done),
                            total=len(units), **extra)
    return summary

