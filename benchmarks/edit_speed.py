"""Editing speed: second-moment statistics of all layers in one pass vs one pass per layer, and a MEMIT
batch vs the same requests as sequential ROME edits; on real weights (`--model smollm2`), every editor's
per-edit phases, fast vs plain (`edit_phases.py`, whose docstring says what it measures).

Models (`--model`, default both):
- organism: the embedded model organism (kelocate.loading.load_model()), its own training text as the
  statistics corpus, requests from `organism_cases` (known facts, counterfactual targets), the editors'
  configured organism settings;
- random12: a random Llama of GPT-2-small size (`build_random_llama`: 12 layers, d_model 768, d_mlp 3072,
  12 heads, the random tokenizer trained to `--vocab` pieces), seeded texts of random words from
  `kelocate.testing.random_model.WORDS` as the corpus, synthetic requests ("w1 w2 w3 was created in", subject
  "w1 w2", a word as the target), the generic profile's settings with the corpus given (`corpus=`,
  mom2_n_samples / mom2_max_length set to the statistics corpus).

Phases, each in its own child process (so that its peak memory is its own):
- stats_one_pass: `second_moments(model, all layers, texts=..., cache=False)`: every layer from one pass
  over the corpus. The same process then times a plain forward pass over the same rows (`forward_s`, no
  hooks), from which the ratios below are predicted;
- stats_per_layer: the reference, `second_moments(model, [layer], ...)` once per layer: one full pass over
  the corpus per layer, as EasyEdit's `layer_stats` is called per layer;
- stats_per_layer_stop: the same with each pass stopped after block `layer` (TransformerLens's
  `stop_at_layer`), as EasyEdit's `Trace(..., stop=True)` does (it stops at down_proj's input of that
  layer: one matmul earlier);
- memit_batch: `MEMIT().apply(model, requests)` once for all requests, then its revert;
- rome_sequential: `ROME().apply(model, request)` per request, stacked, then all reverted in reverse order.

The statistics phases check that they agree with the one pass (max |mom2 - one pass mom2| and the same for
the mean and the token count). The edit phases compute their statistics (into a cache folder of this run)
and the context templates BEFORE the clock starts, so the edit timings measure editing alone; after the
reverts the weights must be bit-identical to before (`state_hash`). Sequential ROME keeps every record (two
copies of the edited matrix each) so that it can revert them: that is in its peak memory.

Expected stats ratio: one pass costs F + L*A (F the forward, A one layer's accumulation of k k^T), one pass
per layer costs L*(F + A), so L*F + (one pass - F) predicted; the stopped variant about F*(L+1)/2 + (one
pass - F). The ratio is close to L only when the forward dominates the accumulation (the organism: d_mlp
768); at d_mlp 3072 the float64 k k^T costs about what the forward costs, so expect well under L.

Prints a table (wall and CPU seconds: CPU seconds are steadier on a shared machine) and ends with one JSON
line: {model: {figures}}.

Sizes: on the organism, the editors' statistics of three layers over its 5757 training texts (~10 tokens
each) took about 45 s on one busy core, and its edits about a second each (--quick). The random12
defaults (128 texts x 32 tokens) are sized for under a minute per pass on 2 cores; its 100 ROME and 100
MEMIT optimisations at d768 are estimated (not measured) at tens of seconds per request on 2 cores, an
hour or more in all: size it with `--requests`, `--model organism`, `--phases` or `--device cuda`.

`--quick` checks the script in about a minute: 20 texts of 16 tokens (the editors' statistics too, the
organism's included), 4 requests, a 2-layer d64 random model (random2) with short optimisations, and
each model's phases in one process (`--processes model`; the phase-peak column stays per phase).

    python benchmarks/edit_speed.py [--model both|organism|random12] [--requests 100] [--stats-texts N]
                                    [--max-length N] [--phases a,b] [--threads 2] [--device cpu|cuda]
                                    [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ helpers
import edit_phases  # noqa: E402
from rss import reset_peak_rss, status_mb  # noqa: E402

PHASES = ("stats_one_pass", "stats_per_layer", "stats_per_layer_stop", "memit_batch", "rome_sequential")
STATS_PHASES = PHASES[:3]
EDIT_PHASES = PHASES[3:]
MODELS = ("organism", "random12")
REAL_MODELS = ("smollm2",)  # real weights: per-edit phases, fast vs plain (edit_phases.py)

# the random models' shapes: (n_layers, d_model, d_mlp, n_heads)
RANDOM_SHAPE = (12, 768, 3072, 12)
QUICK_SHAPE = (2, 64, 128, 4)
# sizes by model when not given: (statistics texts (None: all), tokens per text)
STATS_SIZES = {"organism": (None, 64), "random12": (128, 32)}
QUICK_SIZES = (20, 16)
QUICK_REQUESTS = 4
QUICK_OVERRIDES = {"v_num_grad_steps": 5, "context_lengths": [[4, 2]]}  # random model only, under --quick


# ---------------------------------------------------------------------- memory
class Clock:
    """Wall and CPU seconds, RSS before, peak RSS of the process and of the phase, peak GPU memory."""

    def __init__(self, device: str | None) -> None:
        import torch

        self.cuda = bool(device and device.startswith("cuda"))
        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)

    def __enter__(self) -> Clock:
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.sync()
        self.rss_before = status_mb("VmRSS")
        self.reset = reset_peak_rss()
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        self.sync()
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start
        self.figures = {
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mb": self.rss_before,
            "run_peak_rss_mb": status_mb("VmHWM") if self.reset else None,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None,
        }


# ---------------------------------------------------------------------- problems
def random_texts(n: int, max_length: int, seed: int = 0) -> list[str]:
    """n seeded texts of random words, each of max_length/2 .. max_length words (cut to max_length tokens)."""
    from kelocate.testing.random_model import WORDS

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(max(1, max_length // 2), max_length)))
            for _ in range(n)]


def random_requests(model, n: int, seed: int = 0) -> list:
    """n synthetic requests 'w1 w2 w3 was created in' -> a word, subject 'w1 w2', distinct subjects."""
    from kelocate.edit.request import EditRequest
    from kelocate.errors import KelocateError
    from kelocate.testing.random_model import WORDS

    rng = random.Random(seed)
    words = [w for w in WORDS if w not in ("was", "created", "in")]
    pairs = [(a, b) for a in words for b in words if a != b]
    rng.shuffle(pairs)
    out = []
    for a, b in pairs:
        request = EditRequest(f"{a} {b} {rng.choice(words)} was created in", f"{a} {b}", rng.choice(words))
        try:
            model.subject_span(request.prompt, request.subject)
        except KelocateError:
            continue
        out.append(request)
        if len(out) == n:
            break
    return out


class Problem:
    """What a child works on: the model, the corpus texts, the requests and the editors' settings."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        torch.set_num_threads(args.threads)
        from kelocate.loading import load_model

        self.args = args
        self.organism = args.kind == "organism"
        self.model = load_model(None if self.organism else args.model_dir, device=args.device, dtype=args.dtype)
        self.layers = list(range(self.model.n_layers))
        if self.organism:
            from kelocate.organism.corpus import training_texts
            from kelocate.organism.datasets import organism_world

            self.world = organism_world(self.model, "this benchmark's --model organism needs the organism")
            self.texts = training_texts(self.world)
            self.corpus_name = "organism training text"
        else:
            self.texts = random_texts(args.stats_texts, args.max_length)
            self.corpus_name = "random word texts"
        self.n_texts = min(len(self.texts), args.stats_texts or len(self.texts))

    def stats_kwargs(self) -> dict:
        return {"texts": self.texts, "n_samples": self.n_texts, "max_length": self.args.max_length, "cache": False}

    def rows(self) -> list:
        """The corpus's token rows, exactly those second_moments uses."""
        from kelocate.edit.stats import text_corpus

        return text_corpus(self.model, self.texts, self.n_texts, self.args.max_length).rows(None)

    def requests(self) -> list:
        if self.organism:
            from kelocate.organism.datasets import organism_cases

            return [case.request for case in organism_cases(self.model, self.world, self.args.requests)]
        return random_requests(self.model, self.args.requests)

    def editor(self, method: str):
        """The editor with this model's settings: the organism's configured ones; for a random model the
        generic profile's, with the statistics corpus given."""
        from kelocate.edit import editor

        self._corpus = getattr(self, "_corpus", self.texts[: self.n_texts])  # one object: the editors' memo key
        overrides = {"mom2_n_samples": self.n_texts, "mom2_max_length": self.args.max_length}
        if self.organism:  # its configured settings; under --quick the small statistics corpus
            return editor(method, corpus=self._corpus, **overrides) if self.args.quick else editor(method)
        if self.args.quick:
            overrides |= QUICK_OVERRIDES
        if self.model.n_layers < 4:  # the generic depth fractions all round to layer 0 here
            overrides["layers"] = [0] if method == "rome" else self.layers
        return editor(method, corpus=self._corpus, **overrides)


# ---------------------------------------------------------------------- phases (in a child)
def _warm(problem: Problem, rows: list) -> None:
    """One small forward, so that no phase pays the bridge's first-call costs."""
    from kelocate.model import tokens

    ids, mask = tokens.pad_batch(rows[:2], problem.model.pad_id)
    problem.model.bridge.run_with_hooks(ids.to(problem.model.device), attention_mask=mask.to(problem.model.device))


def _save_moments(folder: Path, results: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for layer, stat in results.items():
        tensors = {"mom2": stat.mom2.contiguous(), "mean": stat.mean.contiguous()}
        save_file(tensors, str(folder / f"layer{layer:03d}.st"), metadata={"count": str(stat.count)})


def _compare(folder: Path, layer: int, mom2, mean, count: int) -> dict | None:
    """|this - the one pass| of one layer (None when the one pass was not run)."""
    from safetensors import safe_open

    path = folder / f"layer{layer:03d}.st"
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        ref_mom2, ref_mean, ref_count = f.get_tensor("mom2"), f.get_tensor("mean"), int(f.metadata()["count"])
    return {"mom2": float((mom2 - ref_mom2).abs().max()), "mean": float((mean - ref_mean).abs().max()),
            "count_equal": count == ref_count, "scale": float(ref_mom2.abs().max())}


def _merge(diffs: list[dict | None]) -> dict | None:
    if not diffs or any(d is None for d in diffs):
        return None
    return {"max_abs_diff": max(d["mom2"] for d in diffs), "mean_max_abs_diff": max(d["mean"] for d in diffs),
            "counts_equal": all(d["count_equal"] for d in diffs),
            "max_rel_diff": max(d["mom2"] / d["scale"] if d["scale"] else d["mom2"] for d in diffs)}


def stats_one_pass(problem: Problem, out: Path) -> dict:
    from kelocate.edit.stats import accumulate, second_moments

    model = problem.model
    rows = problem.rows()
    _warm(problem, rows)
    with Clock(problem.args.device) as clock:
        results = second_moments(model, problem.layers, **problem.stats_kwargs())
    info = dict(clock.figures)
    _save_moments(out / f"{problem.args.label}.one_pass", results)
    with Clock(problem.args.device) as forward:  # the same batches, no hooks: the forward's share
        accumulate(model, [], problem.rows())
    info |= {"forward_s": forward.seconds, "forward_cpu_s": forward.cpu_seconds,
             "tokens": int(sum(len(r) for r in rows)), "texts": len(rows)}
    return info


def stats_per_layer(problem: Problem, out: Path) -> dict:
    from kelocate.edit.stats import second_moments

    _warm(problem, problem.rows())
    results = {}
    with Clock(problem.args.device) as clock:
        for layer in problem.layers:
            results |= second_moments(problem.model, [layer], **problem.stats_kwargs())
    folder = out / f"{problem.args.label}.one_pass"
    diffs = [_compare(folder, layer, s.mom2, s.mean, s.count) for layer, s in results.items()]
    return clock.figures | {"agreement": _merge(diffs)}


def _stopped_pass(model, layer: int, rows: list, batch: int = 16) -> tuple:
    """(E[k k^T], E[k], count) of one layer from forwards stopped after its block: the batching, masking
    and float64 sums of `stats.accumulate`."""
    import math

    import torch

    from kelocate.model import sites, tokens

    mom2 = torch.zeros(model.d_mlp, model.d_mlp, dtype=torch.float64, device=model.device)
    total = torch.zeros(model.d_mlp, dtype=torch.float64, device=model.device)
    state = {"count": 0}

    def hook(x, hook):
        k = x[state["mask"]].detach().to(torch.float64)
        mom2.addmm_(k.T, k)
        total.add_(k.sum(dim=0))
        state["count"] += int(k.shape[0])

    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    for b in range(math.ceil(len(order) / batch)):
        ids, mask = tokens.pad_batch([rows[i] for i in order[b * batch:(b + 1) * batch]], model.pad_id)
        ids, mask = ids.to(model.device), mask.to(model.device)
        state["mask"] = mask.bool()
        model.bridge.run_with_hooks(ids, fwd_hooks=[(sites.site("mlp_post", layer), hook)], attention_mask=mask,
                                    stop_at_layer=layer + 1)
    count = state["count"]
    return (mom2 / count).cpu(), (total / count).cpu(), count


def stats_per_layer_stop(problem: Problem, out: Path) -> dict:
    """One pass per layer, each forward stopped after that layer's block (EasyEdit: `Trace(stop=True)`)."""
    import torch

    _warm(problem, problem.rows())
    found = {}
    with Clock(problem.args.device) as clock, torch.no_grad():
        for layer in problem.layers:  # tokenised per layer, as layer_stats builds its dataset per call
            found[layer] = _stopped_pass(problem.model, layer, problem.rows())
    folder = out / f"{problem.args.label}.one_pass"
    diffs = [_compare(folder, layer, m, mu, c) for layer, (m, mu, c) in found.items()]
    return clock.figures | {"agreement": _merge(diffs)}


def _edit_phase(problem: Problem, method: str) -> dict:
    import torch

    from kelocate.edit.covariance import covariances
    from kelocate.edit.keys import templates_for
    from kelocate.edit.record import NonFiniteEditError, revert_all
    from kelocate.model.weights import state_hash

    model = problem.model
    requests = problem.requests()
    if not requests:
        raise SystemExit(f"{problem.args.label}: no edit requests could be made")
    editor = problem.editor(method)
    hp = editor.hparams(model)
    layers = hp["layers"] if isinstance(hp["layers"], list) else [hp["layers"]]
    templates_for(model, hp)  # set-up outside the clock: context templates and statistics
    if hp.get("mom2_adjustment") or hp.get("mom2_update_weight", 0) > 0:
        covariances(model, layers, hp, getattr(editor, "corpus", None))
    before = state_hash(model)
    records, failed = [], 0
    with Clock(problem.args.device) as clock:
        if method == "memit":
            records.append(editor.apply(model, requests))
        else:
            for request in requests:
                try:
                    records.append(editor.apply(model, request))
                except NonFiniteEditError:  # rolled back by the editor; the sequence goes on
                    failed += 1
    info = dict(clock.figures)
    changed = sum(r.changed_elements() for r in records)
    start = time.perf_counter()
    revert_all(records)
    revert_s = time.perf_counter() - start
    with torch.no_grad():
        restored = state_hash(model) == before
    return info | {"requests": len(requests), "failed": failed, "layers": layers, "revert_s": revert_s,
                   "weights_restored": restored, "changed_elements": changed, "profile": hp["profile"],
                   "steps": hp.get("v_num_grad_steps")}


def memit_batch(problem: Problem, out: Path) -> dict:
    return _edit_phase(problem, "memit")


def rome_sequential(problem: Problem, out: Path) -> dict:
    return _edit_phase(problem, "rome")


def child(args: argparse.Namespace) -> None:
    """Run the phases named in args.child on one model; write each one's figures to args.out."""
    problem = Problem(args)
    out = Path(args.out)
    for phase in args.child.split(","):
        info = globals()[phase](problem, out)
        model = problem.model
        info |= {"n_layers": model.n_layers, "d_model": model.d_model, "d_mlp": model.d_mlp,
                 "corpus": problem.corpus_name, "stats_texts": problem.n_texts, "max_length": args.max_length}
        (out / f"{args.label}.{phase}.json").write_text(json.dumps(info))


# ---------------------------------------------------------------------- the parent
def _label(args: argparse.Namespace, model: str) -> str:
    if model == "organism":
        return "organism"
    return f"random{(QUICK_SHAPE if args.quick else RANDOM_SHAPE)[0]}"


def _sizes(args: argparse.Namespace, model: str) -> tuple[int | None, int]:
    texts, length = QUICK_SIZES if args.quick else STATS_SIZES[model]
    return (args.stats_texts or texts, args.max_length or length)


def run_model(args: argparse.Namespace, model: str, tmp: Path) -> dict[str, dict]:
    """Build the model (random) and run the phases in child processes; their figures by phase."""
    label = _label(args, model)
    model_dir = tmp / label
    if model != "organism":
        from transformers.utils import logging as hf_logging

        from kelocate.testing.random_model import build_random_llama

        hf_logging.disable_progress_bar()

        n_layers, d_model, d_mlp, n_heads = QUICK_SHAPE if args.quick else RANDOM_SHAPE
        build_random_llama(model_dir, n_layers=n_layers, d_model=d_model, d_mlp=d_mlp, n_heads=n_heads,
                           vocab_size=200 if args.quick else args.vocab, seed=0)
    texts, length = _sizes(args, model)
    requests = args.requests or (QUICK_REQUESTS if args.quick else 100)
    groups = [args.phases] if args.processes == "model" else [[p] for p in args.phases]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), KELOCATE_CACHE=str(tmp / "cache"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    results = {}
    for group in groups:
        cmd = [sys.executable, __file__, "--child", ",".join(group), "--kind", model, "--label", label,
               "--model-dir", str(model_dir), "--out", str(tmp), "--threads", str(args.threads),
               "--max-length", str(length), "--requests", str(requests)]
        cmd += ["--stats-texts", str(texts)] if texts else []
        cmd += ["--device", args.device] if args.device else []
        cmd += ["--dtype", args.dtype] if args.dtype else []
        cmd += ["--quick"] if args.quick else []
        subprocess.run(cmd, check=True, env=env)
        for phase in group:
            results[phase] = json.loads((tmp / f"{label}.{phase}.json").read_text())
            print(f"  {label:9s} {phase:21s} {results[phase]['seconds']:9.2f} s", flush=True)
    return results


def figures_of(args: argparse.Namespace, results: dict[str, dict]) -> dict:
    """One model's figures (its entry of the JSON line)."""
    info = next(iter(results.values()))
    n_layers = info["n_layers"]
    fig: dict = {"n_layers": n_layers, "d_model": info["d_model"], "d_mlp": info["d_mlp"],
                 "threads": args.threads, "device": args.device or "cpu"}
    one, per, stop = (results.get(p) for p in STATS_PHASES)
    memit, rome = (results.get(p) for p in EDIT_PHASES)
    if one:
        fig |= {"stats_texts": one["texts"], "stats_tokens": one["tokens"], "max_length": one["max_length"],
                "stats_one_pass_s": round(one["seconds"], 3), "forward_s": round(one["forward_s"], 3)}
    if per:
        fig["stats_per_layer_s"] = round(per["seconds"], 3)
    if stop:
        fig["stats_per_layer_stop_s"] = round(stop["seconds"], 3)
    if one and per:
        fig |= {"stats_ratio": round(per["seconds"] / one["seconds"], 3),
                "stats_cpu_ratio": round(per["cpu_seconds"] / one["cpu_seconds"], 3)}
    if one and stop:
        fig |= {"stats_ratio_stop": round(stop["seconds"] / one["seconds"], 3),
                "stats_cpu_ratio_stop": round(stop["cpu_seconds"] / one["cpu_seconds"], 3)}
    if one:
        forward, total = min(one["forward_s"], one["seconds"]), one["seconds"]
        fig |= {"stats_ratio_predicted": round((n_layers * forward + total - forward) / total, 3),
                "stats_ratio_stop_predicted": round((forward * (n_layers + 1) / 2 + total - forward) / total, 3)}
    for name, phase in (("", per), ("_stop", stop)):
        agreement = phase and phase.get("agreement")
        if agreement:
            fig[f"max_abs_diff{name}"] = agreement["max_abs_diff"]
            fig[f"max_rel_diff{name}"] = agreement["max_rel_diff"]
            fig[f"mean_max_abs_diff{name}"] = agreement["mean_max_abs_diff"]
            fig[f"counts_equal{name}"] = agreement["counts_equal"]
    for key, phase in (("memit_batch", memit), ("rome_sequential", rome)):
        if phase:
            fig |= {f"{key}_s": round(phase["seconds"], 3),
                    f"{key}_s_per_edit": round(phase["seconds"] / phase["requests"], 4),
                    f"{key}_requests": phase["requests"], f"{key}_layers": phase["layers"],
                    f"{key}_weights_restored": phase["weights_restored"],
                    f"{key}_revert_s": round(phase["revert_s"], 4)}
    if rome:
        fig["rome_failed"] = rome["failed"]
    if memit and rome:
        fig["memit_speedup_per_edit"] = round(fig["rome_sequential_s_per_edit"] / fig["memit_batch_s_per_edit"], 3)
    fig["seconds"] = {p: round(r["seconds"], 3) for p, r in results.items()}
    fig["cpu_seconds"] = {p: round(r["cpu_seconds"], 3) for p, r in results.items()}
    fig["peak_rss_mb"] = {p: round(r["peak_rss_mb"], 1) for p, r in results.items()}
    for key in ("rss_before_mb", "run_peak_rss_mb", "peak_gpu_mb"):
        if all(r[key] is not None for r in results.values()):
            fig[key] = {p: round(r[key], 1) for p, r in results.items()}
    fig["processes"] = args.processes
    return fig


def report(args: argparse.Namespace, all_results: dict[str, dict[str, dict]], figures: dict[str, dict]) -> None:
    """Print the readable table and the JSON line."""
    where = ("one process per model (a phase's RSS before includes what earlier phases left)"
             if args.processes == "model" else "their own processes")
    print()
    print(f"editing speed, {args.threads} threads, {args.device or 'cpu'} {args.dtype or 'float32'}"
          f"{', --quick' if args.quick else ''}; phases in {where}")
    print(f"{'model':9s} {'phase':21s} {'seconds':>9s} {'cpu s':>9s} {'s/edit':>8s} {'ratio':>7s} "
          f"{'peak RSS MB':>12s} {'RSS before':>11s} {'phase peak':>11s}")
    for label, results in all_results.items():
        fig = figures[label]
        one = results.get("stats_one_pass")
        for phase, r in results.items():
            per_edit = f"{r['seconds'] / r['requests']:8.3f}" if "requests" in r else f"{'-':>8s}"
            if phase in STATS_PHASES and one:
                ratio = f"{r['seconds'] / one['seconds']:7.2f}"
            elif phase == "rome_sequential" and "memit_speedup_per_edit" in fig:
                ratio = f"{fig['memit_speedup_per_edit']:7.2f}"
            else:
                ratio = f"{'-':>7s}"
            before = f"{r['rss_before_mb']:11.0f}" if r["rss_before_mb"] else f"{'-':>11s}"
            run_peak = f"{r['run_peak_rss_mb']:11.0f}" if r["run_peak_rss_mb"] else f"{'-':>11s}"
            print(f"{label:9s} {phase:21s} {r['seconds']:9.2f} {r['cpu_seconds']:9.2f} {per_edit} {ratio} "
                  f"{r['peak_rss_mb']:12.0f} {before} {run_peak}")
    print("ratio: statistics phases x the one pass's seconds; rome_sequential: its seconds per edit / MEMIT's.")
    print("peak RSS: the process's ru_maxrss at the phase's end; phase peak: VmHWM, reset just before the phase.")
    for label, fig in figures.items():
        lines = []
        if "stats_one_pass_s" in fig:
            lines.append(f"statistics of {fig['n_layers']} layers (d_mlp {fig['d_mlp']}) over "
                         f"{fig['stats_texts']} texts, {fig['stats_tokens']} tokens (<= {fig['max_length']} a text): "
                         f"one pass {fig['stats_one_pass_s']:.2f} s, of which a plain forward {fig['forward_s']:.2f} s")
        if "stats_ratio" in fig:
            lines.append(f"one pass per layer: {fig['stats_ratio']:.2f}x the one pass "
                         f"(CPU {fig['stats_cpu_ratio']:.2f}x; predicted from the forward's share "
                         f"{fig['stats_ratio_predicted']:.2f}x; {fig['n_layers']} layers)")
        if "stats_ratio_stop" in fig:
            lines.append(f"one pass per layer stopped after the layer (EasyEdit's stop=True): "
                         f"{fig['stats_ratio_stop']:.2f}x (CPU {fig['stats_cpu_ratio_stop']:.2f}x; predicted "
                         f"{fig['stats_ratio_stop_predicted']:.2f}x)")
        for name, what in (("", "per layer"), ("_stop", "stopped per layer")):
            if f"max_abs_diff{name}" in fig:
                lines.append(f"{what} vs one pass: max |mom2 diff| {fig[f'max_abs_diff{name}']:.2e} (relative "
                             f"{fig[f'max_rel_diff{name}']:.2e}), max |mean diff| "
                             f"{fig[f'mean_max_abs_diff{name}']:.2e}, token counts equal: "
                             f"{fig[f'counts_equal{name}']}")
        for key, what in (("memit_batch", "MEMIT, one batch"), ("rome_sequential", "ROME, sequential")):
            if f"{key}_s" in fig:
                lines.append(f"{what}: {fig[f'{key}_requests']} requests at layers {fig[f'{key}_layers']}, "
                             f"{fig[f'{key}_s']:.2f} s = {fig[f'{key}_s_per_edit']:.3f} s per edit (statistics and "
                             f"context templates computed before the clock); reverted in "
                             f"{fig[f'{key}_revert_s']:.3f} s, weights bit-identical: "
                             f"{fig[f'{key}_weights_restored']}")
        if fig.get("rome_failed"):
            lines.append(f"ROME: {fig['rome_failed']} edits gave non-finite weights and were rolled back")
        if "memit_speedup_per_edit" in fig:
            lines.append(f"seconds per edit: sequential ROME / MEMIT batch = {fig['memit_speedup_per_edit']:.2f}")
        print(f"{label}:")
        for line in lines:
            print(f"  {line}")
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=(*MODELS, "both", *REAL_MODELS), default="both",
                        help="organism, random12 (a random Llama: 12 layers, d768, d_mlp 3072, 12 heads) or both; "
                             "smollm2: the per-edit phase benchmark of edit_phases.py on real weights")
    parser.add_argument("--requests", type=int, default=None, help="edit requests (default 100; --quick: 4)")
    parser.add_argument("--stats-texts", type=int, default=None,
                        help="statistics corpus texts (default: organism all 5757 training texts, random12 128; "
                             "--quick: 20)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="tokens per statistics text (default: organism 64 (its configured mom2_max_length), "
                             "random12 32; --quick: 16)")
    parser.add_argument("--vocab", type=int, default=1000,
                        help="the random model's tokenizer size (build_random_llama's vocab_size; default 1000)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"phases to run (default all: {','.join(PHASES)})")
    parser.add_argument("--processes", choices=("phase", "model"), default=None,
                        help="a child process per phase (default) or per model (default under --quick)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes to check the script: 20 texts of 16 tokens, 4 requests, a 2-layer random "
                             "model")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--label", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    edit_phases.add_arguments(parser)
    args = parser.parse_args()
    if args.model in REAL_MODELS:
        print(json.dumps(edit_phases.run(args)))
        return
    if args.child:
        child(args)
        return
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in args.phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase {unknown[0]!r}; use some of {', '.join(PHASES)}")
    args.phases = [p for p in PHASES if p in args.phases]  # the one pass first: the others compare with it
    args.processes = args.processes or ("model" if args.quick else "phase")
    models = list(MODELS) if args.model == "both" else [args.model]
    all_results, figures = {}, {}
    with tempfile.TemporaryDirectory(prefix="edit_speed_") as tmp:
        for model in models:
            label = _label(args, model)
            all_results[label] = run_model(args, model, Path(tmp))
            figures[label] = figures_of(args, all_results[label])
    report(args, all_results, figures)


if __name__ == "__main__":
    main()
