"""Per-edit wall time and peak memory of the editors on a real model, split into phases, fast paths against
the plain loops they replace, measured in the same run.

For each method (ROME, MEMIT with a batch of 10, FT-M, AdaLoRA, MEND, SERAC, ICE) and each case (a
CounterFact-length WikiData_counterfact case and a WikiBio passage from the published KnowEdit files) it
edits and evaluates twice:

- fast: kelocate as it runs by default (the block runner over cached prefixes for target optimisation, the
  plain HF twin for forwards, key/value-cached decoding);
- plain: the same code inside `kelocate.plain_paths()`: every forward through the bridge, no cache, target
  optimisation as a whole forward per step: the reference loops.

Each run resets the template cache (so the context prefixes are timed), edits (`editor.apply`), evaluates the
case as the KnowEdit study does (`score_case`: teacher-forced scores, greedy generation of the edit,
rephrase and portability prompts, a sampled fluency text of `--fluency-tokens`), and reverts. The phases come
from `kelocate.timing` (templates, keys, target, statistics, update, training, scoring, generation,
fluency); peak memory is the process's VmHWM over the run, reset before it (the loaded model included).
Statistics (MEMIT's key second moments over 300 texts the model writes itself) go to a fresh cache folder
per run, so both modes compute them.

`--plain-steps N` caps ROME's and MEMIT's target optimisation at N steps (no early stop) on the WikiBio case
in both modes (a plain ROME edit of a WikiBio passage takes minutes per step group); the per-step time is
then what the ratio compares, and the table says so. The CounterFact case always runs
both modes in full. MEND and SERAC need trained checkpoints: `--trained-mend DIR` / `--trained-serac DIR`,
or the script trains throwaway ones for a few steps on the WikiData_counterfact file (their editing time
does not depend on how well they were trained; their scores here mean nothing).

Greedy generation: `--generate-tokens` (100) new tokens of each case's prompt, cached vs the uncached argmax
loop over the bridge, tokens compared. `--target-steps N` sets ROME's and MEMIT's optimisation steps in both
modes (a short check of the script: `--methods rome,ice --cases counterfact --target-steps 3`).

The last line is JSON: rome_s_per_edit, rome_speedup_vs_plain (CounterFact case, whole edit),
generate_speedup_vs_uncached (the first case's prompt), generate_tokens_equal, and every row.

    python benchmarks/edit_speed.py --model smollm2 [--knowedit DIR] [--methods rome,memit,...]
                                    [--plain-steps 3] [--fluency-tokens 100] [--threads 2]
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ helpers
from rss import reset_peak_rss, status_mb  # noqa: E402

METHODS = ("rome", "memit", "ft-m", "adalora", "mend", "serac", "ice")
PHASES = ("templates", "keys", "target", "statistics", "update", "training", "edit", "scoring", "generation",
          "fluency", "evaluate")
BATCH = 10  # MEMIT's batch
TARGETED = ("rome", "memit")  # the editors with a target optimisation (`--target-steps`, `--plain-steps`)
DEFAULT_KNOWEDIT = Path(__file__).resolve().parents[2] / "shared" / "data" / "knowedit"


def load_cases(folder: Path) -> dict[str, list]:
    """The CounterFact-length and WikiBio cases (first records of the published files)."""
    from kelocate.studies.knowedit.plan import load_cases as load

    return {"counterfact": load(str(folder / "train_cf.json"), "WikiData_counterfact"),
            "wikibio": load(str(folder / "wikibio-test-all.json"), "WikiBio")}


def trained(method: str, model, cases, given: str | None, folder: Path, steps: int) -> str:
    """A trained checkpoint of MEND/SERAC: the one given, or one trained for `steps` steps (timing only)."""
    if given:
        return given
    from kelocate.edit import registry
    from kelocate.studies.knowedit.training import training_edits_of

    entry = registry.method(method)
    overrides = {"steps": steps} if method == "mend" else {"classifier_steps": steps, "cf_steps": steps}
    config = entry.config_function()(model, **overrides)
    out = folder / method
    start = time.perf_counter()
    entry.train_function()(model, training_edits_of(cases[:40]), out, config)
    print(f"  trained a throwaway {method} for {steps} steps in {time.perf_counter() - start:.0f} s (timing only)")
    return str(out)


def one_run(model, method: str, cases: list, settings, plain: bool, target_steps: int | None,
            trained_dirs: dict[str, str], capped: bool = False) -> dict:
    """Edit `cases` (one, or MEMIT's batch) with `method`, evaluate the first, revert; phases, wall, peak."""
    from kelocate import editor, plain_paths, timing
    from kelocate.edit import covariance, keys
    from kelocate.edit.registry import TRAINED
    from kelocate.edit.registry import method as method_entry
    from kelocate.studies.knowedit.metrics import baseline, score_case
    from kelocate.studies.knowedit.unit import request_of

    # capped: exactly `target_steps` steps (no early stop), so that per-step times compare
    overrides = {} if target_steps is None else {"v_num_grad_steps": target_steps,
                                                 **({"loss_stop": 0.0} if capped else {})}
    if method_entry(method).needs_trained:
        overrides = {TRAINED: trained_dirs[method]}
    ed = editor(method, **overrides)
    before = baseline(model, cases[:1])[0]
    keys._PREFIX_CACHE.clear()  # the context prefixes and statistics are computed in every run
    covariance._MEMO.clear()
    saved_cache = os.environ.get("KELOCATE_CACHE")
    with tempfile.TemporaryDirectory() as cache, contextlib.ExitStack() as stack:
        os.environ["KELOCATE_CACHE"] = cache  # statistics cached on disk in a fresh folder
        stack.callback(_restore_env, "KELOCATE_CACHE", saved_cache)
        if plain:
            stack.enter_context(plain_paths())
        phases = stack.enter_context(timing.collecting())
        reset_peak_rss()
        start = time.perf_counter()
        record = ed.apply(model, [request_of(c) for c in cases] if len(cases) > 1 else request_of(cases[0]))
        edited = time.perf_counter()
        scores = score_case(model, cases[0], before, settings, unit=cases)
        done = time.perf_counter()
        record.revert()
        peak = status_mb("VmHWM")
    steps = [t.get("steps") for t in (record.extra.get("targets") or [record.extra.get("target") or {}])]
    return {"method": method, "mode": "plain" if plain else "fast", "edit": edited - start, "evaluate": done - edited,
            **{k: v for k, v in phases.items()}, "peak_mb": peak, "target_steps": [s for s in steps if s],
            "scores": {k: round(v, 4) for k, v in scores.items()}}


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def generation_check(model, prompt: str, n: int = 100) -> dict:
    """Greedy n tokens cached vs the uncached argmax loop over the bridge."""
    from kelocate.model import sampling

    ids = model.encode(prompt).ids[None]

    def uncached(current: torch.Tensor) -> torch.Tensor:
        return model.bridge(current)[:, -1]

    with torch.no_grad():
        start = time.perf_counter()
        fast = sampling.sample(model, ids, n, greedy=True)
        middle = time.perf_counter()
        plain = sampling.sample(model, ids, n, greedy=True, step=uncached)
        end = time.perf_counter()
    return {"prompt_tokens": ids.shape[1], "cached_s": middle - start, "uncached_s": end - middle,
            "speedup": (end - middle) / (middle - start), "tokens_equal": bool(torch.equal(fast, plain))}


def warm_up(model) -> None:
    """One short run of each path before any clock starts (the twin's and block runner's one-time checks,
    lazy imports), so that the fast column, which runs first, does not pay them."""
    from kelocate import plain_paths
    from kelocate.model.stack import guarded_stack

    guarded_stack(model)
    model.generate("Warm up", 2)
    with plain_paths():
        model.generate("Warm up", 2)
    import peft  # noqa: F401  (AdaLoRA imports it inside its timed edit)


def table(rows: list[dict]) -> str:
    """A markdown table: per method and case, each phase fast / plain and the ratio."""
    lines = ["| method | case | phase | fast s | plain s | plain / fast |", "|---|---|---|---:|---:|---:|"]
    pairs: dict[tuple, dict] = {}
    for row in rows:
        pairs.setdefault((row["method"], row["case"]), {})[row["mode"]] = row
    for (method, case), modes in pairs.items():
        fast, plain = modes.get("fast", {}), modes.get("plain", {})
        for phase in PHASES:
            if phase not in fast and phase not in plain:
                continue
            a, b = fast.get(phase), plain.get(phase)
            name = phase
            if phase == "target" and (plain.get("capped") or fast.get("capped")):
                a = a / max(1, sum(fast["target_steps"])) if a is not None else None
                b = b / max(1, sum(plain["target_steps"])) if b is not None else None
                name = "target (per step)"
            ratio = f"{b / a:.1f}x" if a and b else ""
            lines.append(f"| {method} | {case} | {name} | {_s(a)} | {_s(b)} | {ratio} |")
        peaks = _s(fast.get("peak_mb"), 0), _s(plain.get("peak_mb"), 0)
        lines.append(f"| {method} | {case} | peak MiB | {peaks[0]} | {peaks[1]} | |")
    return "\n".join(lines)


def _s(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def run(args) -> dict:
    from kelocate import load_model
    from kelocate.studies.knowedit.metrics import MetricSettings

    torch.set_num_threads(args.threads)
    folder = Path(args.knowedit)
    if not folder.is_dir():
        raise SystemExit(f"no KnowEdit folder at {folder}; pass --knowedit DIR (the published files)")
    model = load_model(args.model)
    cases = load_cases(folder)
    settings = MetricSettings(fluency_tokens=args.fluency_tokens)
    methods = [m for m in args.methods.split(",") if m]
    work = Path(tempfile.mkdtemp(prefix="kelocate-edit-phases-"))
    trained_dirs = {m: trained(m, model, cases["counterfact"], getattr(args, f"trained_{m}"), work / "trained",
                               args.train_steps) for m in ("mend", "serac") if m in methods}
    warm_up(model)
    print(f"{args.model}: {model.n_layers} layers, d_model {model.d_model}; {torch.get_num_threads()} threads; "
          f"baseline RSS {status_mb('VmRSS'):.0f} MiB")
    rows = []
    for case_name in args.cases.split(","):
        pool = cases[case_name]
        for method in methods:
            chosen = pool[:BATCH] if method == "memit" else pool[:1]
            for plain in (False, True):
                # a plain WikiBio edit runs minutes per few steps: both modes capped alike, so steps compare
                capped = case_name == "wikibio" and bool(args.plain_steps) and method in TARGETED
                steps = args.plain_steps if capped else args.target_steps
                row = one_run(model, method, chosen, settings, plain, steps if method in TARGETED else None,
                              trained_dirs, bool(capped))
                row.update(case=case_name, capped=bool(capped))
                rows.append(row)
                print(f"  {method:8s} {case_name:11s} {row['mode']:5s} edit {row['edit']:7.2f} s  "
                      f"evaluate {row['evaluate']:6.2f} s  peak {row['peak_mb']:.0f} MiB", flush=True)
    generation = {name: generation_check(model, cases[name][0].prompt, args.generate_tokens)
                  for name in args.cases.split(",")}
    print()
    print(table(rows))
    print()
    for name, g in generation.items():
        print(f"greedy {args.generate_tokens} tokens after the {name} prompt ({g['prompt_tokens']} tokens): "
              f"cached {g['cached_s']:.2f} s, uncached {g['uncached_s']:.2f} s, {g['speedup']:.1f}x, "
              f"tokens equal: {g['tokens_equal']}")
    rome = {r["mode"]: r for r in rows if r["method"] == "rome" and r["case"] == "counterfact"}
    out = {"model": args.model, "threads": args.threads, "rows": rows, "generation": generation}
    if "fast" in rome and "plain" in rome:
        out["rome_s_per_edit"] = round(rome["fast"]["edit"], 3)
        out["rome_speedup_vs_plain"] = round(rome["plain"]["edit"] / rome["fast"]["edit"], 2)
    first = next(iter(generation.values()))
    out["generate_speedup_vs_uncached"] = round(first["speedup"], 2)
    out["generate_tokens_equal"] = all(g["tokens_equal"] for g in generation.values())
    out |= hardware_floors(model, cases["counterfact"][0], rome.get("fast"), first, args.generate_tokens)
    return out


def hardware_floors(model, case, rome_fast: dict | None, generation: dict, n_tokens: int) -> dict:
    """The machine's floors (`floors.py`) beside the measured times: ROME's target steps against their matrix
    FLOPs at this machine's matrix rate, cached decoding against reading the weights once per token."""
    import floors

    from kelocate.edit.keys import templates_for
    from kelocate.edit.registry import editor
    from kelocate.studies.knowedit.unit import request_of

    out = {}
    per_token = floors.decode_floor_per_token(model)
    best = generation["uncached_s"] / (n_tokens * per_token)
    out |= {"decode_floor_s_per_token": round(per_token, 4), "generate_floor_speedup": round(best, 2),
            "cached_s_per_token": round(generation["cached_s"] / n_tokens, 4)}
    print(f"decoding floor (every weight read once per token): {per_token * 1e3:.1f} ms/token; cached decoding "
          f"{generation['cached_s'] / n_tokens * 1e3:.1f} ms/token; the most any cached decoder could be faster "
          f"than the uncached loop here: {best:.1f}x")
    if rome_fast is not None and rome_fast.get("target_steps"):
        rome = editor("rome")
        hp = rome.hparams(model)
        layer = hp["layers"][0]
        step = floors.rome_step_floor(model, request_of(case), layer, templates_for(model, hp), hp)
        steps = sum(rome_fast["target_steps"])
        floor = steps * step["seconds"]
        out |= {"rome_target_s": round(rome_fast["target"], 3), "rome_target_floor_s": round(floor, 3),
                "rome_step_gflop": round(step["flops"] / 1e9, 1), "matmul_gflop_s": round(step["rate"] / 1e9, 1)}
        print(f"ROME target optimisation: {steps} steps of {step['flops'] / 1e9:.1f} GFLOP of matrix products "
              f"({step['rows']} rows, {step['positions']} positions); at this machine's "
              f"{step['rate'] / 1e9:.0f} GFLOP/s that is at least {floor:.2f} s; measured {rome_fast['target']:.2f} s")
    return out


def add_arguments(parser) -> None:
    parser.add_argument("--knowedit", default=str(DEFAULT_KNOWEDIT), help="folder of the published KnowEdit files")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--cases", default="counterfact,wikibio")
    parser.add_argument("--plain-steps", type=int, default=3)
    parser.add_argument("--fluency-tokens", type=int, default=100)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--trained-mend", default=None)
    parser.add_argument("--trained-serac", default=None)
    parser.add_argument("--target-steps", type=int, default=None,
                        help="ROME/MEMIT target optimisation steps in both modes (default: the profile's)")
    parser.add_argument("--generate-tokens", type=int, default=100)
