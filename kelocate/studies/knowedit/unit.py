"""One unit of a study: edit, score, revert.

`task_state` takes, once per task on the unedited model, what every unit of the task works from: the cases
as the study edits them (ConvSent's ask for the opposite of the opinion the model holds), the unedited
model's predictions (the baseline of each selected case) and the general-ability set. `make_editor` builds
a method's editor with the study's settings (a trained checkpoint, IKE's demonstrations: the task's other
cases). `run_unit` applies the unit's edits through `kelocate.locate_then_edit.locate_and_edit` (KN's
neurons, or the profile's layers), scores every case with `kelocate.studies.knowedit.metrics` (with
generation, the row's `replies` keep what the model said to each edit prompt before and after) and reverts;
in sequential mode it also records the curve (the scores of the edits made so far after k edits). A
failure the methods report (a `KelocateError`) is recorded in the row with its error, never dropped.

Everything here is a function of the model, the config and the unit: the serial runner and every Ray worker
compute the same row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kelocate.data.knowedit import EditCase
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError
from kelocate.studies.knowedit.config import SEQUENTIAL, TRAINED, StudyConfig
from kelocate.studies.knowedit.metrics import (
    Baseline,
    MetricSettings,
    baseline,
    edited_prompts,
    score_case,
    teacher_forced_many,
)
from kelocate.studies.knowedit.plan import Unit, selected, selected_cases

CURVE_COLUMNS = ("edit_tf", "rephrase_tf", "portability_tf", "locality_tf")


def request_of(case: EditCase, demonstration: bool = False) -> EditRequest:
    """The edit request of a case. A case without a usable subject (Sanitation's trivia questions have
    none) uses its question, which the prompt contains, so subject-keyed editors still have a position
    (`EditCase.edit_subject`).

    The case's paraphrases are its evaluation rephrasings, so the request an editor applies carries none: an
    editor that read them (KN locates its neurons over the request's paraphrases) would be scored on the very
    prompts it was fitted to. `demonstration=True` keeps them, for IKE's pool, whose entries demonstrate other
    cases' facts (IKE never retrieves the edited case itself)."""
    return EditRequest(case.prompt, case.edit_subject, case.target_new, ground_truth=case.ground_truth,
                       paraphrases=case.paraphrase_prompts if demonstration else ())


def task_state(config: StudyConfig, model, cases: Sequence[EditCase], settings: MetricSettings):
    """What every unit of a task works from, taken once on the unedited model: the cases as the study edits
    them (ConvSent's selected edits ask for the opposite of the opinion the model holds:
    `against_held_opinions`, greedy, so every Ray worker derives the same), the baseline of each selected
    case (by index) and the general-ability set (or None)."""
    opinions = [i for i in selected(config, cases) if cases[i].task == "ConvSent"]
    if opinions and config.requests == "easyedit":  # the reference's instruction, a seeded direction
        from kelocate.studies.knowedit.easyedit_metrics import convsent_request

        asked = set(opinions)
        cases = [convsent_request(c, config.seed) if i in asked else c for i, c in enumerate(cases)]
    elif opinions:
        from kelocate.studies.knowedit.metrics import against_held_opinions, lexicon_for

        lexicon = lexicon_for(settings, model.provenance.is_organism)
        cases = against_held_opinions(model, cases, opinions, lexicon)
    if "easyedit" in config.metrics and opinions:
        from kelocate.studies.knowedit.easyedit_metrics import with_next_topics

        cases = with_next_topics(cases)  # ee.kl reads the next topic's replies
    chosen = selected_cases(config, cases)
    # a unit's other edits are not "other topics"
    spare = {"single": 0, "mixed": len(opinions)}.get(config.mode, config.n - 1)
    befores = dict(zip(chosen, baseline(model, list(chosen.values()), settings, spare), strict=True))
    return cases, befores, general_set(config, model, list(chosen.values()))


def general_set(config: StudyConfig, model, cases: Sequence[EditCase]):
    """What general ability is measured on (None when the study does not measure it), a `GeneralMeasure`: the
    organism's own facts of subjects no case edits and their held-out statements, or the config's files; and
    the config's lm-eval tasks."""
    if not config.general:
        return None
    from kelocate.data.general import load_general_set
    from kelocate.organism.datasets import organism_general_set, organism_world
    from kelocate.studies.knowedit.general import GeneralMeasure
    from kelocate.studies.knowedit.harness import HarnessSpec, require_lm_eval

    harness = None
    if config.harness_tasks:
        require_lm_eval()
        harness = HarnessSpec(tuple(config.harness_tasks), config.harness_include, config.harness_limit)
    if config.general_facts or config.general_text:
        return GeneralMeasure(load_general_set(config.general_facts, config.general_text), harness)
    if not model.provenance.is_organism:
        if harness is not None:
            return GeneralMeasure(None, harness)
        raise KelocateError("general = true needs general_facts and/or general_text files (or harness_tasks) for "
                            "this model")
    world = organism_world(model, "set general_facts and/or general_text files for general = true")
    return GeneralMeasure(organism_general_set(model, world, {c.subject for c in cases}, seed=config.seed), harness)


def make_editor(method: str, config: StudyConfig, cases: Sequence[EditCase]):
    """The editor of a method with the study's settings: its [editors.<method>] table, the trained checkpoint
    (set for every MEND/SERAC method by `training.with_trained`; 'mend@TASK' only takes the one trained on
    TASK), IKE's pool (the task's selected cases), the study's statistics corpus."""
    from kelocate.edit import registry

    base = method.partition("@")[0]
    entry = registry.method(base)
    settings = dict(config.editors.get(base, {}))
    settings.pop(TRAINED, None)
    settings.pop("train", None)  # training settings, used by `training.with_trained`
    if entry.needs_trained:
        trained = config.editors.get(method, {}).get(TRAINED)
        if trained is None:
            raise KelocateError(f"{base} needs a trained checkpoint: set [editors.{base}] {TRAINED} = \"DIR\"")
        settings[TRAINED] = trained
    if entry.needs_pool:
        settings[registry.POOL] = [request_of(c, demonstration=True) for c in cases]
    if entry.uses_corpus and config.corpus != "model":
        settings.setdefault("corpus", config.corpus)  # the study's corpus, unless [editors.X] names another
    return registry.editor(base, **settings)


def curve_point(model, edited: Sequence[EditCase], befores: Sequence[Baseline], per_task: bool = False
                ) -> dict[str, Any]:
    """After k sequential edits: the mean teacher-forced columns over the k cases edited so far (do the
    early edits still hold, and their neighbours? Neighbours that one of the k edits changes on purpose are
    left out). With `per_task` (mode `mixed`: the edits come from several tasks), `tasks` holds the same means
    per task, each case scored with its own task's probes."""
    scores = teacher_forced_many(model, edited, befores, edited=edited_prompts(edited))
    point: dict[str, Any] = {"edits": len(edited), **_curve_means(scores)}
    tasks = list(dict.fromkeys(case.task for case in edited))
    if per_task:
        point["tasks"] = {task: _curve_means([s for s, c in zip(scores, edited, strict=True) if c.task == task])
                          for task in tasks}
    return point


def _curve_means(scores: Sequence[Mapping[str, float]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for column in CURVE_COLUMNS:
        values = [s[column] for s in scores if column in s]
        out[column] = sum(values) / len(values) if values else None
    return out


def unit_row(unit: Unit, cases: Sequence[EditCase]) -> dict[str, Any]:
    """What every row of a unit starts with: its key, method, task, mode and cases (file, index); in mode
    `mixed` also each case's task (`case_tasks`)."""
    row = {"unit": unit.key, "method": unit.method, "task": unit.task, "mode": unit.mode,
           "cases": [list(cases[i].source) for i in unit.cases]}
    if unit.mode == "mixed":  # each case's own task, for the report's per-task rows
        row["case_tasks"] = [cases[i].task for i in unit.cases]
    return row


def replies_of(case: EditCase, before: Baseline, said: Mapping[str, str]) -> dict[str, Any]:
    """What the model said to a case's edit prompt before and after the edit (greedy, as long as `edit_gen`
    decodes), with the target and the old answer's aliases (`failures.classify` reads them)."""
    old = [a for a in dict.fromkeys((case.ground_truth, *case.ground_truth_aliases)) if a]
    return {"prompt": case.prompt, "before": before.reply, "after": said.get("after"), "target": case.target_new,
            "old": old}


def run_unit(model, chosen, unit: Unit, cases: Sequence[EditCase], befores: Mapping[int, Baseline],
             settings: MetricSettings, curve: Sequence[int] = (), general=None,
             edited_one: Callable[[int, int], None] = lambda done, total: None) -> dict[str, Any]:
    """Edit, score and revert one unit; a failure is recorded with its error, never dropped. In sequential
    mode the row also holds the curve: the scores after each of the `curve` edit counts, with general
    ability (`general`, a GeneralMeasure) there and before the first edit; `edited_one(k, n)` is called after
    each of its edits (a 470-edit unit runs for minutes)."""
    from kelocate.edit.record import revert_all
    from kelocate.locate_then_edit import locate_and_edit
    from kelocate.studies.knowedit.general import general_ability

    row = unit_row(unit, cases)
    sequential = unit.mode in SEQUENTIAL
    organism = model.provenance.is_organism
    records = []
    try:
        requests = [request_of(cases[i]) for i in unit.cases]
        if unit.mode == "batch" and len(requests) > 1:
            records.append(locate_and_edit(model, chosen, requests))
        else:
            edited = [cases[i] for i in unit.cases]
            if sequential and general is not None:
                row["general_before"] = general_ability(model, general)
            for k, request in enumerate(requests, 1):
                records.append(locate_and_edit(model, chosen, request))
                edited_one(k, len(requests))
                if sequential and (k in curve or k == len(requests)):
                    point = curve_point(model, edited[:k], [befores[i] for i in unit.cases[:k]],
                                        per_task=unit.mode == "mixed")
                    if general is not None:
                        point |= general_ability(model, general)
                    row.setdefault("curve", []).append(point)
            if general is not None and general.harness is not None and len(model.serving):
                row["harness_skipped"] = "a served editor changes no weight; lm-eval scores weights"
        together = [cases[i] for i in unit.cases]
        said = [{} for _ in unit.cases]
        row["scores"] = [score_case(model, cases[i], befores[i], settings, organism, together, s)
                         for i, s in zip(unit.cases, said, strict=True)]
        if settings.generation:
            row["replies"] = [replies_of(cases[i], befores[i], s) for i, s in zip(unit.cases, said, strict=True)]
        row["status"] = "ok"
    except KelocateError as exc:
        row["status"], row["error"] = "failed", str(exc)
    finally:
        revert_all(records)
    return row
