"""The trained editors of a study (MEND, SERAC): each needs a trained checkpoint, named in the config
(`[editors.<method>] trained = "DIR"`) or, on the organism, trained into the study folder first.

`with_trained` runs before any unit, in the process that writes the results (the serial runner, or the Ray
driver): it trains what the remaining units need and returns the config with every trained editor's
`trained` folder set, so the workers that run units only load checkpoints and never train. Training resumes
if killed, and a finished one is not redone. 'mend@TASK' is MEND trained on TASK's train split (the
cross-domain comparison); plain 'mend' trains on the organism's training edits, whose subjects no test case
edits. A model other than the organism without a checkpoint is one line of error, before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kelocate.data.knowedit import EditCase
from kelocate.edit import registry
from kelocate.errors import KelocateError
from kelocate.studies.knowedit.config import TRAINED, StudyConfig
from kelocate.studies.knowedit.plan import Unit, load_cases


def with_trained(config: StudyConfig, todo: Sequence[Unit], model, folder: Path,
                 log: Callable[[str], None]) -> StudyConfig:
    """The config with every MEND/SERAC editor's `trained` folder set, training here what the study trains."""
    editors = {method: dict(values) for method, values in config.editors.items()}
    for method in dict.fromkeys(u.method for u in todo):
        base = method.partition("@")[0]
        if registry.method(base).needs_trained and editors.get(method, {}).get(TRAINED) is None:
            overrides = editors.get(base, {}).get("train", {})
            editors.setdefault(method, {})[TRAINED] = str(train_for_study(method, model, folder, log, config,
                                                                          overrides))
    return dataclasses.replace(config, editors=editors)


def _digest(sources: set[tuple[str, int]]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(sorted(sources)).encode()).hexdigest()[:10]


def tested_sources(config: StudyConfig, path: str | Path) -> set[tuple[str, int]]:
    """The (file, index) of every case the study tests that comes from the file at `path` (a train split used
    as a task's test file too: the published WikiData_counterfact and WikiData_recent files are train splits),
    so that MEND and SERAC never train on the edits they are scored on."""
    from kelocate.studies.knowedit.plan import selected

    same = Path(path).resolve()
    out: set[tuple[str, int]] = set()
    for task, file in config.files.items():
        if task in config.tasks and Path(file).resolve() == same:
            cases = load_cases(file, task)
            out |= {cases[i].source for i in selected(config, cases)}
    return out


def training_edits_of(cases: Sequence[EditCase]):
    """Training edits from loaded cases: each request, with its locality probes as neighbours
    (`kelocate.data.training.case_record`, as a KnowEdit file given to `kelocate train` is read)."""
    from kelocate.data.training import case_record
    from kelocate.edit.training import TrainingEdit

    return [TrainingEdit.from_record(case_record(c)) for c in cases]


def train_for_study(method: str, model, folder: Path, log: Callable[[str], None], config: StudyConfig | None = None,
                    overrides: dict[str, Any] | None = None) -> Path:
    """Train MEND or SERAC into the study folder (resumes if killed): on the organism's training edits, or,
    for 'mend@TASK', on that task's train split; `overrides` are training settings ([editors.mend.train])."""
    base, _, train_task = method.partition("@")
    entry = registry.method(base)
    settings = entry.config_function()(model, **(overrides or {}))
    tested = set()
    if train_task and config is not None and train_task in config.train_files:
        tested = tested_sources(config, config.train_files[train_task])
    out = folder / "trained" / (method if not tested else f"{method}-without-tested-{_digest(tested)}")
    marker = out / f"{base}.json"  # a checkpoint trained on other data (or with the test cases in) is not reused
    if marker.is_file() and json.loads(marker.read_text()).get("trained_steps") == settings.steps:
        return out  # finished earlier: its (slow to build) training data is not needed
    if train_task:
        from kelocate.organism.datasets import organism_split_file

        path = (config.train_files.get(train_task) if config is not None else None) or \
            organism_split_file(model, train_task, "train")
        cases = load_cases(path, train_task)
        examples = training_edits_of([c for c in cases if c.source not in tested])
        if tested:
            log(f"{len(tested)} cases of {Path(path).name} are the study's test cases: left out of training")
    elif not model.provenance.is_organism:
        raise KelocateError(f"{base} needs a trained checkpoint for this model: set [editors.{base}] {TRAINED} = "
                            f"\"DIR\" (see `kelocate train {base}`)")
    else:
        from kelocate.organism.datasets import organism_training_edits_for

        examples = organism_training_edits_for(model, f"set [editors.{base}] {TRAINED} = \"DIR\"",
                                               draws=entry.training_draws)
    log(f"training {base} for the study into {out} ({len(examples)} edits; resumable) ...")
    entry.train_function()(model, examples, out, settings)
    return out
