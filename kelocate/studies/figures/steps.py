"""Every section of the figures report, in report order: compute (from the model), draw (from the data alone),
describe (caption, numbers, the paper's number). Each wraps the study or locator that also has its own command;
the numbers are that command's."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kelocate.studies.figures.sections import (
    Context,
    Description,
    Step,
    editor_settings,
    facts_file_id,
    file_id,
    needs_facts,
    peak_rows,
    trained_ids,
)
from kelocate.studies.numbers import fmt, pct

# ====================================================================== the averaged causal trace


def _trace_key(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    return {"facts": s.trace_facts, "samples": s.samples, "seed": s.seed, "file": facts_file_id(ctx)}


def _trace_compute(ctx: Context) -> dict[str, Any]:
    from kelocate.locate.causal_trace.average import average_indirect_effect
    from kelocate.locate.causal_trace.tracing import TraceSettings
    from kelocate.organism.datasets import load_trace_facts

    if ctx.organism:
        facts, source, skipped = load_trace_facts(ctx.model, "organism", ctx.settings.trace_facts, ctx.settings.seed)
    else:  # a fact file: facts the model knows (a random sample of a real file is mostly facts it does not)
        from kelocate.data.facts import Fact
        from kelocate.studies.known_facts import known_cases

        cases = known_cases(ctx.model, ctx.settings.trace_facts, ctx.settings.seed, ctx.settings.facts_file)
        facts = [Fact(c.request.prompt, c.request.subject, c.request.ground_truth) for c in cases]
        source, skipped = f"{Path(ctx.settings.facts_file).name}, known facts", []
    return average_indirect_effect(ctx.model, facts, source, skipped_on_load=skipped,
                                   settings=TraceSettings(samples=ctx.settings.samples),
                                   on_step=lambda i, f: ctx.log(f"trace {i}/{len(facts)}: {f.prompt}"))


def _trace_draw(data: Mapping[str, Any], folder: Path, data_dir: Path) -> list[Path]:
    from kelocate.plots.style import save_figure
    from kelocate.plots.trace import average_figure

    return save_figure(average_figure(dict(data)), folder / "average_trace", ("png",))


def _trace_describe(data: Mapping[str, Any]) -> Description:
    kinds = data["kinds"]
    skipped = sum(v for v in data["skipped"].values())
    return Description(
        f"Average indirect effect of restoring one hidden state (and a window of MLP / attention outputs) of the "
        f"clean run into the subject-corrupted run, per token group and layer, over {data['n_facts']} facts the "
        f"model knows ({data['source']}; {skipped} skipped: unknown answer, subject not in the prompt or no "
        "effect). Causal tracing as ROME's, each fact traced with its own noise draws.",
        [(["token group", *kinds], peak_rows(data))],
        "ROME (Meng et al. 2022) on GPT-2 XL: MLP effects peak at the last subject token in middle layers; "
        "attention at the last token in late layers.")


# ====================================================================== KLoB


def _klob_dir(ctx: Context) -> str:
    if ctx.settings.klob_data:
        return ctx.settings.klob_data
    from kelocate.organism.datasets import organism_klob_dir

    return str(organism_klob_dir(ctx.model))


def _klob_key(ctx: Context) -> dict[str, Any]:
    return {"limit": ctx.settings.klob_limit, "samples": ctx.settings.samples, "seed": ctx.settings.seed,
            "data": file_id(ctx.settings.klob_data)}


def _klob_compute(ctx: Context) -> dict[str, Any]:
    from kelocate.locate.locators import make_locator
    from kelocate.studies.klob.study import load_klob_data, run_klob_study

    records = load_klob_data(_klob_dir(ctx), ctx.settings.klob_limit, None, None, ctx.settings.seed,
                             tokenizer=ctx.model.tokenizer)
    subjects = sorted({f.subject for f in records.facts} | {c.subject for c in records.chains})
    locator = make_locator("causal-trace", "mlp", 20, ctx.settings.samples, "last_subject", sigma_subjects=subjects)
    result = run_klob_study(ctx.model, locator, records, "jaccard", seed=ctx.settings.seed)
    return {k: v for k, v in result.items() if k not in ("locations", "details")}


def _klob_draw(data: Mapping[str, Any], folder: Path, data_dir: Path) -> list[Path]:
    from kelocate.plots.klob import draw_klob_curves

    return draw_klob_curves(dict(data), folder / "klob", ("png",))


def _klob_describe(data: Mapping[str, Any]) -> Description:
    names = [k for k in ("consistency", "relevance", "unbiasedness") if data.get(k)]
    rows = [[str(k), *(fmt(data[n][i]) for n in names)] for i, k in enumerate(data["k"])]
    n = data["n"]
    return Description(
        f"KLoB RSim of causal tracing (MLP, last subject token) over the top-k layers: consistency (facts of one "
        f"relation located alike), relevance (a chain's location overlaps its facts') and unbiasedness (factual "
        f"vs random-word inputs located differently); {n['facts']} facts, {n['chains']} chains, {n['random']} "
        f"random sentences, {data['similarity']} overlap. RSim = (Sim_cand - Sim_all) / (1 - Sim_all).",
        [(["k", *names], rows)],
        "KLoB (Ju & Zhang 2023) and the comprehensive study's Figure 8 find causal tracing's layers "
        "only weakly consistent and relevant.")


# ====================================================================== the KnowEdit study

STUDY_METHODS = ("kn", "rome", "memit", "ft-l", "ft-m", "mend", "ice", "adalora")
SEQUENTIAL_METHODS = ("rome", "memit", "alphaedit", "ft-m")
SHOWN = ("edit_tf", "rephrase_tf", "portability_tf", "locality_tf", "edit_gen", "fluency")


def _study_config(ctx: Context, sequential: bool):
    from kelocate.studies.knowedit.config import StudyConfig, check_config

    s = ctx.settings
    editors = editor_settings(ctx)
    if sequential:
        n = s.study_cases * 5
        config = StudyConfig(methods=list(SEQUENTIAL_METHODS), tasks=["WikiData_counterfact"], cases=n,
                             mode="sequential", n=n, curve=sorted({1, 5, n}), generation=False, fluency=False,
                             seed=s.seed, editors=editors)
    else:
        config = StudyConfig(methods=list(STUDY_METHODS), cases=s.study_cases, seed=s.seed, editors=editors)
    return check_config(config)


def _study_key(sequential: bool):
    return lambda ctx: {"cases": ctx.settings.study_cases, "seed": ctx.settings.seed, "sequential": sequential,
                        "trained": trained_ids(ctx)}


def _study_compute(sequential: bool):
    def compute(ctx: Context) -> dict[str, Any]:
        from kelocate.studies.knowedit.report import aggregate, curves
        from kelocate.studies.knowedit.runner import run_study
        from kelocate.studies.knowedit.store import read_results

        config = _study_config(ctx, sequential)
        # a results folder per key: a study run with other settings must not resume into this one
        key = _study_key(sequential)(ctx)
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        folder = ctx.folder / "data" / f"{'sequential' if sequential else 'knowedit'}_{digest}"
        run_study(config, folder, progress=lambda done, total, what: ctx.log(f"study unit {done}/{total} {what}"),
                  log=ctx.log)
        rows = read_results(folder)
        return {"config": dataclasses.asdict(config), "table": aggregate(rows),
                "curves": {t: {m: {str(k): v for k, v in p.items()} for m, p in ms.items()}
                           for t, ms in curves(rows).items()}}
    return compute


def _study_draw(data: Mapping[str, Any], folder: Path, data_dir: Path) -> list[Path]:
    from kelocate.plots.study import draw_curves

    loaded = {t: {m: {int(k): v for k, v in p.items()} for m, p in ms.items()} for t, ms in data["curves"].items()}
    return draw_curves(loaded, folder, ("png",)) if loaded else []


def _study_describe(data: Mapping[str, Any]) -> Description:
    table = data["table"]
    shown = [c for c in SHOWN if any(r.get(c) is not None for r in table)]
    rows = [[r["method"], r["task"], *(fmt(r.get(c)) for c in shown), str(r["cases"])] for r in table]
    config = data["config"]
    if config["mode"] == "sequential":
        caption = (f"Sequential editing (the comprehensive study's Figure 4): {config['n']} WikiData_counterfact "
                   f"edits one after another per method, teacher-forced edit success and locality after "
                   f"{', '.join(map(str, config['curve']))} edits.")
        paper = ("The comprehensive study (Figure 4, LLaMA-2 7B): ROME and MEMIT collapse after some hundreds of "
                 "sequential edits; the published numbers come with `kelocate study paper` (issue 22).")
    else:
        caption = (f"The KnowEdit study (Table 4 analog): {', '.join(config['methods'])} on all six tasks, "
                   f"{config['cases']} cases per task, one edit at a time; teacher-forced (_tf) and generated "
                   "(_gen) scores, means over cases.")
        paper = "The comprehensive study's Table 4 (LLaMA-2 7B); not the same model, so compare orderings."
    return Description(caption, [(["method", "task", *shown, "cases"], rows)], paper)


def needs_study(ctx: Context) -> str | None:
    return None if ctx.organism else ("runs on the organism's exported KnowEdit files; on this model run "
                                      "`kelocate study run CONFIG` with the real files (studies/smollm2_knowedit.toml)")


# ====================================================================== the SMAP case

REAL_CASE = ("The Eiffel Tower is located in the city of=>Paris",
             "The Eiffel Tower is located in the country of=>France",
             "The Eiffel Tower was designed by=>Gustave Eiffel", "Eiffel Tower")


def _case_key(ctx: Context) -> dict[str, Any]:
    return {"samples": ctx.settings.samples, "seed": ctx.settings.seed + 1,
            "case": None if ctx.organism else list(REAL_CASE)}


def _case_compute(ctx: Context) -> dict[str, Any]:
    from kelocate.locate.causal_trace.tracing import TraceSettings
    from kelocate.studies.case import make_case, run_case

    case = None if ctx.organism else make_case(*REAL_CASE)
    result = run_case(ctx.model, case, TraceSettings(kinds=("hidden", "mlp", "attn"), samples=ctx.settings.samples,
                                                     seed=ctx.settings.seed + 1))
    return result.to_dict()


def _case_draw(data: Mapping[str, Any], folder: Path, data_dir: Path) -> list[Path]:
    from kelocate.plots.case import save_case_figures
    from kelocate.studies.case import CaseResult

    return save_case_figures(CaseResult.from_dict(data), folder, ("png",))


def _case_describe(data: Mapping[str, Any]) -> Description:
    from kelocate.studies.case import PAPER_CLAIM, CaseResult

    rows = []
    for kind in data["kinds"]:
        m = data["means"][kind]
        rows.append([kind, f"{m['fact~chain']:.2f}", f"{m['fact~unrelated']:.2f}", f"{m['chain~unrelated']:.2f}",
                     f"{data['chance_means'][kind]:.2f}", data["kind_verdicts"][kind]])
    prompts = data["prompts"]
    checks = [check.line() for check in CaseResult.from_dict(data).checks]
    return Description(
        f"The SMAP case (Figure 9): the fact {prompts['fact']['prompt']!r} -> {prompts['fact']['answer']!r}, a "
        f"question that needs its chain {prompts['chain']['prompt']!r} -> {prompts['chain']['answer']!r} and an "
        f"unrelated fact of the same subject {prompts['unrelated']['prompt']!r} -> "
        f"{prompts['unrelated']['answer']!r}, traced alike (subject {data['subject']!r} corrupted), and the overlap "
        "of their top-k layers (Jaccard, mean over k = 1..K) against chance. Verdict: " + data["verdict"],
        [(["kind", "fact~chain", "fact~unrelated", "chain~unrelated", "chance", "finds"], rows)],
        f"The paper: causal tracing seems to \"{PAPER_CLAIM}\".", checks,
        f"Do the SMAP traces differ? {data['verdict']}")


# ====================================================================== knowledge-graph recovery


# the paper's four and FT-M, one fact at a time; AlphaEdit and MEMIT as one batch are left to `kelocate study
# recovery` (they add 5 minutes on the organism, past the report's 20)
RECOVERY_METHODS = ("rome", "memit", "ft-l", "ft-m")


def _recovery_settings(ctx: Context):
    from kelocate.studies.recovery import RecoverySettings

    editors = editor_settings(ctx)
    methods = ctx.settings.recovery_methods or (*RECOVERY_METHODS, *(("mend",) if "mend" in editors else ()))
    # the bit-exact revert control with the first editor (its cost is one forward edit per fact and round)
    return RecoverySettings(methods, ctx.settings.recovery_facts, ctx.settings.recovery_rounds, (), methods[:1],
                            100, ctx.settings.seed, editors)


def _recovery_key(ctx: Context) -> dict[str, Any]:
    return _recovery_settings(ctx).to_json() | {"editors": trained_ids(ctx), "file": facts_file_id(ctx)}


def _recovery_compute(ctx: Context) -> dict[str, Any]:
    from kelocate.studies.recovery import run_recovery

    return run_recovery(ctx.model, _recovery_settings(ctx), log=ctx.log,
                        facts_file=None if ctx.organism else ctx.settings.facts_file).to_json()


def _recovery_draw(data: Mapping[str, Any], folder: Path, data_dir: Path) -> list[Path]:
    from kelocate.plots.recovery import draw_recovery

    return draw_recovery(data, folder / "recovery", ("png",))


def _recovery_describe(data: Mapping[str, Any]) -> Description:
    base = data["baseline"]
    rows = [["unedited", "0", "0", pct(base["edited_recall"]), f"{base['other_recall']:.3f}",
             pct(base["neighbour_recall"]), "0"]]
    for run in data["runs"]:
        for r in run["rounds"]:
            rows.append([run["label"], str(r["round"]), f"{r['distance_mean']:.4f}", pct(r["edited_recall"]),
                         f"{r['other_recall']:.3f}", pct(r["neighbour_recall"]), f"{r['kl']:.3g}"])
    world = data["world"]
    s = data["settings"]
    return Description(
        f"Knowledge-graph recovery (Figure 10 made a measurement): {s['facts']} known facts edited o -> o' and then "
        f"o' -> o with the same method (a second edit, not a revert), {s['rounds']} round trips; the world's graph "
        f"distance after each round is {[w['distance'] for w in world]}. Per round: relative weight distance from "
        f"the original, recall of the edited facts' original answers, of every other known fact "
        f"({data['probes']['others']}) and of the edited subjects' other facts, KL on "
        f"{data['probes']['unrelated']} unrelated prompts. The bit-exact revert is the control.",
        [(["run", "round", "weight dist.", "edited recall", "other recall", "subject's other", "KL"], rows)],
        "The paper (Figure 10, drawn without a procedure): editing a knowledge graph back restores it, while "
        "\"similar recovery efforts fail to reinstate the original model\".", answer=recovery_answer(data))


def recovery_answer(data: Mapping[str, Any]) -> str:
    """Whether any editor's edit-and-back restored the model after the last round (distance 0 and every recall
    as before), with the closest one's numbers; a run that stopped early is left out."""
    base = data["baseline"]
    rounds = int(data["settings"]["rounds"])
    last = [(run["label"], run["rounds"][-1]) for run in data["runs"]
            if run["mode"] != "revert" and not run["error"] and len(run["rounds"]) == rounds]
    if not last:
        return "no editor finished its round trips"
    restored = [label for label, r in last if r["distance_mean"] == 0 and all(
        r[key] == base[key] for key in ("edited_recall", "other_recall", "neighbour_recall"))]
    label, best = min(last, key=lambda item: item[1]["distance_mean"])
    head = (f"restored by {', '.join(restored)}" if restored else
            f"no editor restores the model after {rounds} round trips (the graph is restored exactly)")
    return (f"{head}: closest {label}, weight distance {best['distance_mean']:.3g}, edited facts' original answers "
            f"{best['edited_recall']:.0%}, other facts {best['other_recall']:.3f} "
            f"(unedited {base['other_recall']:.3f})")


# ====================================================================== locate vs edit


def _locate_key(ctx: Context) -> dict[str, Any]:
    return {"facts": ctx.settings.locate_facts, "samples": ctx.settings.samples, "seed": ctx.settings.seed,
            "file": facts_file_id(ctx)}


def _locate_compute(ctx: Context) -> dict[str, Any]:
    from kelocate.studies.locate_vs_edit import LocateVsEditSettings, run_locate_vs_edit

    settings = LocateVsEditSettings(facts=ctx.settings.locate_facts, samples=ctx.settings.samples,
                                    seed=ctx.settings.seed)
    return run_locate_vs_edit(ctx.model, settings, log=ctx.log,
                              facts_file=None if ctx.organism else ctx.settings.facts_file).to_json()


def _locate_draw(data: Mapping[str, Any], folder: Path, data_dir: Path) -> list[Path]:
    from kelocate.plots.locate_vs_edit import draw_locate_vs_edit

    return draw_locate_vs_edit(data, folder / "locate_vs_edit", ["png"])


def _locate_describe(data: Mapping[str, Any]) -> Description:
    rows = []
    for metric, m in data["summary"]["metrics"].items():
        rows.append([metric, fmt(m["pooled"]["pearson"], ".2f"), fmt(m["pooled"]["spearman"], ".2f"),
                     fmt(m["within_pearson"], ".2f"), fmt(m["auto_mean"]), fmt(m["fixed_mean"]),
                     f"{m['auto_wins']}/{m['ties']}/{m['fixed_wins']}"])
    return Description(
        f"Does locating predict editing? For {len(data['facts'])} known facts, the single-layer MLP indirect effect "
        f"of every layer at the edit token ({data['token']!r}) against ROME's edit success and paraphrase success "
        f"when editing that layer (every layer, reverted after each). Pearson and Spearman r over all (fact, layer) "
        f"pairs, the mean within-fact r, and the layer of largest effect ('auto') against the profile's fixed "
        f"layer {data['fixed_layer']}.",
        [(["metric", "Pearson", "Spearman", "within-fact Pearson", "auto layer", "fixed layer",
           "auto wins/ties/losses"], rows)],
        "Hase et al. 2023 (GPT-J): the tracing effect barely predicts which layer ROME edits best.",
        answer=locate_answer(data))


def locate_answer(data: Mapping[str, Any]) -> str:
    """The pooled and within-fact r of effect vs edit and paraphrase success, and auto vs fixed layer."""
    m = data["summary"]["metrics"]
    return (f"Does the traced layer predict where ROME works? Pearson r {fmt(m['success']['pooled']['pearson'], '.2f')}"
            f" (edit success), {fmt(m['paraphrase']['pooled']['pearson'], '.2f')} (paraphrase) over (fact, layer), "
            f"within facts {fmt(m['paraphrase']['within_pearson'], '.2f')}; the traced layer scores "
            f"{fmt(m['paraphrase']['auto_mean'])} vs {fmt(m['paraphrase']['fixed_mean'])} at the fixed layer "
            f"{data['fixed_layer']} (paraphrase success, {len(data['facts'])} facts)")


# ====================================================================== weights: projection and sparsity


def _weights_settings(ctx: Context):
    from kelocate.studies.weights import COMPARED, DEFAULT_METHODS, WeightsSettings

    editors = editor_settings(ctx)
    methods = ctx.settings.weights_methods or tuple(m for m in DEFAULT_METHODS if m != "mend" or "mend" in editors)
    return WeightsSettings(methods, tuple(m for m in COMPARED if m in methods), ctx.settings.weights_facts,
                           ctx.settings.seed, editors=editors)


def _weights_key(ctx: Context) -> dict[str, Any]:
    return _weights_settings(ctx).to_json() | {"editors": trained_ids(ctx), "file": facts_file_id(ctx)}


def _weights_compute(ctx: Context) -> dict[str, Any]:
    from kelocate.studies.weights import run_weights

    result = run_weights(ctx.model, _weights_settings(ctx), None if ctx.organism else ctx.settings.facts_file,
                         log=ctx.log)
    from kelocate.studies.weights import save_heatmaps

    data = result.to_json()
    # the heatmaps beside the data, named by the data they belong to (a killed run cannot pair them wrongly)
    name = f"weights_{hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]}.npz"
    save_heatmaps(ctx.folder / "data" / name, result.heatmaps)
    return data | {"heatmaps_file": name}


def _weights_draw(data: Mapping[str, Any], folder: Path, data_dir: Path) -> list[Path]:
    from kelocate.plots.weights import draw_weights

    with np.load(data_dir / data["heatmaps_file"]) as stored:
        heatmaps = {m: stored[m] for m in stored.files}
    return [p for files in draw_weights(data, heatmaps, folder, ("png",)).values() for p in files]


def _weights_describe(data: Mapping[str, Any]) -> Description:
    from kelocate.studies.weights import summary_table

    summary = data["summary"]
    fact = data["facts"][data["heatmap_fact"]] if data.get("heatmap_fact") is not None else None
    notes = list(summary["paper"].values())
    return Description(
        f"What the edits wrote, {len(data['facts'])} known facts, each edited alone by every weight editor. "
        f"Projection (Figure 7): the top-5 columns of dW of the edited down_proj, read through the unembedding "
        f"from W and W'; Hit@k of the new target's first token, any of the five, over the "
        f"{len(summary['common_facts'])} facts every compared method ({', '.join(summary['compared'])}) edited "
        "successfully, with five random columns and the base rate as controls. Sparsity (Figure 6): |dW| of the "
        f"compared methods on one fact ({fact['prompt']!r} -> {fact['new_object']!r}) on one log colour scale, and "
        "the concentration of every edit's dW over value columns (squared L2 mass per column; participation "
        "ratio = effective number of columns; numerical rank)." if fact else "What the edits wrote.",
        [summary_table(summary)],
        "The paper (Figure 7, ZsRE on LLaMA-2): MEMIT Hit@50 59.7% -> 70.2%; MEND Hit@50 above 90% before and "
        "Hit@1 above 90% after; no increase for ROME and FT-L. Figure 6: edits \"concentrate on one or several "
        "columns of the value layer\".", notes, weights_answer(summary))


def weights_answer(summary: Mapping[str, Any]) -> str:
    """Is FT-L's dW denser than ROME's, and does MEMIT raise Hit@50 (top dW columns, any of five)?"""
    parts = [summary["ft_l_denser_than_rome"]] if summary.get("ft_l_denser_than_rome") else []
    memit = summary["methods"].get("memit", {}).get("projection_common")
    if memit:
        top = memit["top"]
        parts.append(f"MEMIT's top dW columns: Hit@50 {pct(top['before']['any']['50'])} -> "
                     f"{pct(top['after']['any']['50'])} (random columns {pct(memit['random']['before']['any']['50'])} "
                     f"-> {pct(memit['random']['after']['any']['50'])}; n={memit['n']})")
    return "; ".join(parts) or "no FT-L/ROME or MEMIT edits to compare"


STEPS = (
    Step("trace", "Averaged causal trace", _trace_key, _trace_compute, _trace_draw, _trace_describe, needs_facts),
    Step("klob", "KLoB: consistency, relevance, unbiasedness", _klob_key, _klob_compute, _klob_draw,
         _klob_describe, lambda ctx: None if ctx.organism or ctx.settings.klob_data else
         "needs KLoB-c/KLoB-r files: pass --klob-data DIR"),
    Step("case", "The SMAP case", _case_key, _case_compute, _case_draw, _case_describe),
    Step("weights", "Embedding-space projection and sparsity of edits", _weights_key, _weights_compute,
         _weights_draw, _weights_describe, needs_facts),
    Step("recovery", "Knowledge-graph recovery", _recovery_key, _recovery_compute, _recovery_draw,
         _recovery_describe, needs_facts),
    Step("locate_vs_edit", "Does locating predict editing?", _locate_key, _locate_compute, _locate_draw,
         _locate_describe, needs_facts),
    Step("knowedit", "The KnowEdit study", _study_key(False), _study_compute(False), _study_draw, _study_describe,
         needs_study),
    Step("sequential", "Sequential editing", _study_key(True), _study_compute(True), _study_draw, _study_describe,
         needs_study),
)


def step(name: str) -> Step:
    """A step by name."""
    for s in STEPS:
        if s.name == name:
            return s
    raise KeyError(name)


def dumps(data: Mapping[str, Any]) -> str:
    """A step's data as JSON text (NaN allowed: the studies write it)."""
    return json.dumps(data, allow_nan=True)
