"""`make_figures`: every figure of kelocate in one folder, resumably, and the report that shows them.

Layout of FOLDER: `data/<step>.json` (each section's data with the key it was computed under and the seconds it
took; a rerun whose key matches reads it instead of recomputing), `data/` also holds what a step needs besides
(the KnowEdit study's resumable results, the trained MEND), `figures/<step>/*.png`, and `report.html`
(self-contained: the figures are embedded). A section that cannot run on the model says why in the report; one
that fails is reported with its error while the others go on, and `make_figures` then raises one line naming it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kelocate.atomic import same_key, write_text
from kelocate.errors import KelocateError
from kelocate.studies.figures.sections import Context, FiguresRun, FiguresSettings, Section
from kelocate.studies.figures.steps import STEPS, Step

VERSION = 1  # of the cached data: a new version recomputes
MEND_STEPS = ("weights", "recovery", "knowedit")  # the sections that run MEND (trained first on the organism)


def step_key(step: Step, ctx: Context) -> dict[str, Any]:
    """What a step's data depends on: its own key, the model's fingerprint and the cache version."""
    return {"step": step.name, "version": VERSION, "model": ctx.model.fingerprint, **step.key(ctx)}


def cached_data(path: Path, key: dict[str, Any]) -> tuple[dict[str, Any], float] | None:
    """The data stored at `path` under `key`, with the seconds it took; None when absent, stale or unreadable."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or not same_key(stored.get("key"), key):
        return None
    return stored["data"], float(stored.get("seconds", 0.0))


def _train_mend(ctx: Context) -> None:
    """On the organism, MEND is trained once into FOLDER/data (resumable) unless a checkpoint is given."""
    if ctx.organism and "mend" not in ctx.settings.trained:
        from kelocate.studies.knowedit.training import train_for_study

        ctx.settings.trained["mend"] = str(train_for_study("mend", ctx.model, ctx.folder / "data", ctx.log))


def run_step(step: Step, ctx: Context) -> Section:
    """Compute (or read) one step's data, draw its figures, describe them."""
    section = Section(step.name, step.title)
    reason = step.unavailable(ctx)
    if reason:
        section.skipped = reason
        return section
    key = step_key(step, ctx)
    path = ctx.folder / "data" / f"{step.name}.json"
    found = cached_data(path, key)
    try:
        if found is None:
            start = time.perf_counter()
            data = step.compute(ctx)
            section.seconds = round(time.perf_counter() - start, 1)
            write_text(path, json.dumps({"key": key, "seconds": section.seconds, "data": data}, allow_nan=True))
        else:
            data, section.seconds = found
            section.cached = True
        section.figures = step.draw(data, ctx.folder / "figures" / step.name, ctx.folder / "data")
        section.description = step.describe(data)
    except KelocateError as exc:
        section.error = str(exc)
    except Exception as exc:  # a bug: reported in its section, the others go on, then raised (make_figures)
        section.error = f"{type(exc).__name__}: {exc}"
        section.exception = exc
    return section


def check_sections(names: Sequence[str]) -> None:
    """One line of error for a section name that is not one of `STEPS`."""
    known = [s.name for s in STEPS]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KelocateError(f"unknown section {unknown[0]!r}; use some of {', '.join(known)}")


def make_figures(model, folder: str | Path, settings: FiguresSettings | None = None,
                 only: Sequence[str] | None = None, progress: Callable[[int, int, str], None] | None = None,
                 log: Callable[[str], None] = lambda text: None) -> FiguresRun:
    """Every section (or those named in `only`) on `model` into `folder`, then `folder/report.html`.
    `progress(done, total, name)` is called before each section and at the end."""
    from kelocate.studies.figures.report import write_report

    settings = dataclasses.replace(settings or FiguresSettings())  # a copy: MEND's folder is added to it below
    settings.trained = dict(settings.trained)
    settings.check()
    check_sections(only or ())
    chosen = [s for s in STEPS if not only or s.name in only]
    start = time.perf_counter()
    ctx = Context(model, settings, Path(folder), log)
    if settings.train_mend and any(s.name in MEND_STEPS for s in chosen):
        _train_mend(ctx)  # a finished training is found and not redone
    sections = []
    for i, step in enumerate(chosen):
        if progress:
            progress(i, len(chosen), step.title)
        sections.append(run_step(step, ctx))
        log(f"{step.name}: " + (sections[-1].skipped or sections[-1].error or
                                f"{'cached' if sections[-1].cached else 'computed'} in {sections[-1].seconds:.0f} s"))
    if progress:
        progress(len(chosen), len(chosen), "report")
    run = FiguresRun(model.name, model.fingerprint, dict(vars(settings)), sections)
    run.seconds = round(time.perf_counter() - start, 1)
    run.report = write_report(run, ctx.folder / "report.html")
    bugs = [s.exception for s in sections if s.exception is not None]
    if bugs:  # not a user's mistake: the report is written, and the first one keeps its traceback
        raise bugs[0]
    return run
