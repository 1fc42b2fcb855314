"""Edit quality on the organism: 100 counterfactual edits of known facts per editor, batch and sequential.

For each editor of the registry (KN, ROME, MEMIT, PMET, AlphaEdit, FT-L, FT-M, ICE, AdaLoRA, and MEND /
SERAC given their trained checkpoints: `--trained mend=DIR --trained serac=DIR`), every case is applied
alone, scored and reverted (the state hash and the logits of a probe prompt must come back bit for bit
after each): edit success on the prompt (teacher-forced token accuracy of the new target), paraphrase
success (the fact's other templates), locality on the same subject's other facts and on 100 unrelated
facts (fraction of answer tokens whose argmax is unchanged). KN's neurons come from the knowledge-neuron
locator; `--auto N` also runs `layers='auto'` on the first N cases and reports where the causal tracer put
the layers.

`--batch` edits all cases in one MEMIT / AlphaEdit batch; `--sequential N` applies N edits one after the
other with ROME, MEMIT and AlphaEdit (no revert in between) and records, every `--every` edits, the mean
success on the facts edited so far and the locality on the unrelated facts: the sequential-editing
curves, written as JSON (`--curves FILE`) for the study runner to draw.

    python benchmarks/edit_quality.py [--cases 100] [--methods rome,memit,...] [--auto 10] [--batch]
                                      [--trained mend=MEND_DIR] [--trained serac=SERAC_DIR]
                                      [--sequential 500 --every 50 --curves curves.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from kelocate.edit import editor, registry
from kelocate.edit.record import revert_all
from kelocate.loading import load_model
from kelocate.locate_then_edit import locate_and_edit
from kelocate.model import weights
from kelocate.organism.datasets import knowedit_case, organism_cases, organism_world, unrelated_facts
from kelocate.studies.knowedit.metrics import Baseline, teacher_forced
from kelocate.studies.knowedit.metrics import baseline as unedited_predictions

# the registry's editors that need nothing but the model (in its order); trained ones join with --trained
METHODS = tuple(name for name, m in registry.METHODS.items() if not m.needs)
COLUMNS = ("edit_success", "paraphrase_success", "locality_subject", "locality_unrelated")
# each column is one of the study's teacher-forced metrics of the edit as a KnowEdit case
METRIC_OF = dict(zip(COLUMNS, ("edit_tf", "portability_tf.Paraphrase", "locality_tf.Subject",
                               "locality_tf.Unrelated"), strict=True))


def baseline(model, case, unrelated=()) -> Baseline:
    """The unedited model's predictions on the case's locality probes (its subject's other facts, `unrelated`)."""
    return unedited_predictions(model, [knowedit_case(case, unrelated)])[0]


def score_case(model, case, unrelated=(), before: Baseline | None = None) -> dict[str, float]:
    """Edit success on the prompt and on the paraphrases (nan without any), locality on the subject's other facts
    and on `unrelated` (against `before`, the unedited predictions; without it, no locality)."""
    scores = teacher_forced(model, knowedit_case(case, unrelated if before else (), before is not None),
                            before or Baseline())
    return {"paraphrase_success": float("nan")} | {k: scores[m] for k, m in METRIC_OF.items() if m in scores}


def mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if key in r and r[key] == r[key]]
    return round(statistics.mean(values), 4) if values else float("nan")


SETTINGS: dict[str, dict] = {}  # per-method editor settings from the command line (a trained checkpoint)


def single_edits(model, method: str, cases, unrelated) -> dict:
    original = weights.state_hash(model)
    probe = model.logits(model.encode(cases[0].request.prompt).ids)
    chosen = editor(method, **SETTINGS.get(method, {}))
    rows, start, exact = [], time.perf_counter(), True
    for case in cases:
        before = baseline(model, case, unrelated)
        record = locate_and_edit(model, chosen, case.request)
        rows.append(score_case(model, case, unrelated, before))
        record.revert()
        exact &= weights.state_hash(model) == original
        exact &= torch.equal(model.logits(model.encode(cases[0].request.prompt).ids), probe)
    seconds = time.perf_counter() - start
    return {"method": method, "cases": len(cases), **{k: mean(rows, k) for k in COLUMNS},
            "layers": chosen.hparams(model).get("layers"), "s_per_edit": round(seconds / len(cases), 3),
            "reverts_exact": exact}


def auto_layers(model, method: str, cases) -> dict:
    chosen, found, failed = editor(method), [], []
    for case in cases:
        try:
            record = locate_and_edit(model, chosen, case.request, layers="auto")
        except Exception as exc:  # an invalid trace is refused with its reason: count it
            failed.append(str(exc)[:120])
            continue
        found.append((record.layers, score_case(model, case)["edit_success"]))
        record.revert()
    counts: dict[str, int] = {}
    for layers, _ in found:
        counts[",".join(map(str, layers))] = counts.get(",".join(map(str, layers)), 0) + 1
    return {"method": method, "auto_layer_counts": counts,
            "auto_edit_success": round(statistics.mean(s for _, s in found), 4) if found else None,
            "refused": len(failed), "refusals": failed[:3]}


def batch_edit(model, method: str, cases, unrelated) -> dict:
    original = weights.state_hash(model)
    befores = [baseline(model, c, unrelated) for c in cases]
    start = time.perf_counter()
    record = editor(method).apply(model, [c.request for c in cases])
    seconds = time.perf_counter() - start
    rows = [score_case(model, c, unrelated, b) for c, b in zip(cases, befores, strict=True)]
    record.revert()
    return {"method": method, "batch": len(cases), **{k: mean(rows, k) for k in COLUMNS},
            "seconds": round(seconds, 2), "reverts_exact": weights.state_hash(model) == original}


def sequential(model, method: str, cases, unrelated, every: int) -> dict:
    original = weights.state_hash(model)
    chosen = editor(method)
    before_unrelated = baseline(model, cases[0], unrelated)
    records, curve, start = [], [], time.perf_counter()
    for i, case in enumerate(cases, 1):
        records.append(chosen.apply(model, case.request))
        if i % every == 0 or i == len(cases):
            edited = cases[:i]
            rows = [score_case(model, c) for c in edited]
            scores = [row["edit_success"] for row in rows]
            paraphrases = [row["paraphrase_success"] for row, c in zip(rows, edited, strict=True) if c.paraphrases]
            local = score_case(model, cases[0], unrelated, before_unrelated)["locality_unrelated"]
            curve.append({"edits": i, "edit_success": round(statistics.mean(scores), 4),
                          "paraphrase_success": round(statistics.mean(paraphrases), 4),
                          "locality_unrelated": round(local, 4), "seconds": round(time.perf_counter() - start, 1)})
            print(f"  {method} after {i} edits: {curve[-1]}", flush=True)
    revert_all(records)
    return {"method": method, "curve": curve, "reverts_exact": weights.state_hash(model) == original}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--unrelated", type=int, default=100)
    parser.add_argument("--methods", default=None, help="editors of the single-edit table, or none (default: all "
                        "that need nothing, plus those given --trained, in the registry's order)")
    parser.add_argument("--auto", type=int, default=0, help="layers='auto' on the first N cases")
    parser.add_argument("--batch", action="store_true", help="MEMIT and AlphaEdit on all cases in one batch")
    parser.add_argument("--sequential", type=int, default=0, help="N sequential edits (ROME, MEMIT, AlphaEdit)")
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--curves", default=None, help="write the sequential curves (JSON) here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trained", action="append", default=[], metavar="METHOD=DIR",
                        help="a trained checkpoint (kelocate train METHOD --out DIR), e.g. mend=DIR; repeat")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for given in args.trained:
        name, _, folder = given.partition("=")
        if not folder or name not in registry.TRAINABLE:
            parser.error(f"--trained {given!r}: write METHOD=DIR for one of {', '.join(registry.TRAINABLE)}")
        SETTINGS[name] = {registry.TRAINED: folder}
    default_methods = [name for name in registry.METHODS if name in METHODS or name in SETTINGS]
    model = load_model()
    world = organism_world(model, "the benchmark runs on the organism")
    n_cases = max(args.cases, args.sequential)
    cases = organism_cases(model, world, n_cases)
    unrelated = unrelated_facts(model, world, cases, args.unrelated)
    chosen = args.methods if args.methods is not None else ",".join(default_methods)
    methods = [m.strip() for m in chosen.split(",") if m.strip() and m.strip() != "none"]
    figures: dict = {"cases": len(cases[: args.cases]), "unrelated": len(unrelated), "single": [], "auto": [],
                     "batch": [], "sequential": []}
    print(f"organism: {len(cases[:args.cases])} counterfactual edits of known facts, {len(unrelated)} unrelated "
          f"facts, {args.threads} threads")
    print(f"{'method':10} {'edit':>6} {'para':>6} {'loc-subj':>9} {'loc-unrel':>9} {'s/edit':>7}  layers  exact")
    for method in methods:
        row = single_edits(model, method, cases[: args.cases], unrelated)
        figures["single"].append(row)
        print(f"{method:10} {row['edit_success']:6.3f} {row['paraphrase_success']:6.3f} "
              f"{row['locality_subject']:9.3f} {row['locality_unrelated']:9.3f} {row['s_per_edit']:7.2f}  "
              f"{row['layers']}  {row['reverts_exact']}", flush=True)
    for method in methods if args.auto else ():
        if method == "kn":
            continue
        row = auto_layers(model, method, cases[: args.auto])
        figures["auto"].append(row)
        print(f"auto {method}: {row}", flush=True)
    for method in ("memit", "alphaedit") if args.batch else ():
        row = batch_edit(model, method, cases[: args.cases], unrelated)
        figures["batch"].append(row)
        print(f"batch {method}: {row}", flush=True)
    for method in ("rome", "memit", "alphaedit") if args.sequential else ():
        row = sequential(model, method, cases[: args.sequential], unrelated, args.every)
        figures["sequential"].append(row)
    if args.curves:
        from kelocate.atomic import write_text

        write_text(args.curves, json.dumps(figures["sequential"], indent=2))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
