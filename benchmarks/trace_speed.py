"""Causal-tracing speed: the fast exact engine against the per-cell oracle and TransformerLens-style patching.

Shapes (random weights; 10 noise samples, all three kinds (hidden, mlp, attn), window by the default rule):
- gpt2-small (default, issue 3): 12 layers, d_model 768, d_mlp 3072, 12 heads, the random tokenizer's small
  vocabulary; a 12-token prompt (BOS included) with a 3-token subject at positions 1..3; every row measured.
- smollm2: SmolLM2-135M's shape: 30 layers, d_model 576, d_mlp 1536, 9 query / 3 key-value heads of 64, a tied
  49,152-token vocabulary (the random tokenizer padded with unreachable pieces to that size, so the LM head
  costs what it costs on the real model: about 8 blocks per logit row); the final norm's weight is scaled
  x10 so that the answer is sharp (p ~ 0.2) and restoring it matters. An 11-token prompt with a 3-token
  subject at 1..3. The oracle needs about 10 minutes of 2 cores for all 990 cells, so by default every
  implementation runs on the subject tokens and the last token (`--rows 1,2,3,10`; `--rows all` for the lot),
  and the fast engine also runs the full grid in its own process (`fast_full`). The full-grid ratio is then
  estimated: every oracle cell is one forward of the same batch, so the full oracle takes its measured time
  per cell x 990.

Each implementation runs in its own child process (so that its peak memory is its own):
- oracle: ROME's procedure, one patched bridge forward (`model.sites`: `Patch`, `read`) of batch 1+S per cell;
- per_cell: clean activations cached once, one patched bridge forward of batch S per cell
  (how TransformerLens's patching utilities work);
- plain_hooks: ROME's procedure as ROME runs it, written here with plain forward hooks on a plain Hugging Face
  model of the same weights (no bridge): the reference a reader compares with ROME's own code;
- fast: `kelocate.locate.causal_trace.engine.fast_grids` (fast_full: the same on every row).

`--shape smollm2-real` runs the real SmolLM2-135M (`kelocate models fetch smollm2`) on ROME's Eiffel Tower
prompt, every row; `--only plain_hooks,fast` there gives `speedup_vs_plain_hooks` (the figure the README
quotes) without the bridge oracle's ten minutes.

Prints a table (wall and CPU seconds: CPU seconds are steadier on a shared machine), the bound that exact
skipping allows (from operation counts, `work_units`), the achieved fraction of it, the largest difference of
the fast grids from the oracle, and ends with one JSON line. `--profile` also times the fast engine's stages.

    python benchmarks/trace_speed.py [--shape gpt2-small|smollm2|smollm2-real] [--rows all|1,2,3,10] [--threads 2]
                                     [--device cpu|cuda] [--dtype float32|bfloat16] [--profile]
    python benchmarks/trace_speed.py --shape smollm2-real --only plain_hooks,fast
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ helpers
from rss import reset_peak_rss, status_mb  # noqa: E402

KINDS = ("hidden", "mlp", "attn")
SAMPLES = 10
IMPLEMENTATIONS = ("oracle", "per_cell", "plain_hooks", "fast", "fast_full")


@dataclass(frozen=True)
class Shape:
    """A benchmark model shape and its prompt."""

    name: str
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_kv_heads: int
    vocab: int | None  # None: the random tokenizer's own size
    prompt: str
    subject: str
    n_tokens: int
    default_rows: str
    span: tuple[int, int] = (1, 4)  # the subject's tokens
    real: str | None = None  # a real model's source (kelocate.load_model), instead of random weights

    def describe(self) -> str:
        kv = "" if self.n_kv_heads == self.n_heads else f"/{self.n_kv_heads}"
        heads = f"{self.n_heads}{kv} heads"
        vocab = f", vocab {self.vocab}" if self.vocab else ""
        return f"{self.name}: {self.n_layers} layers d{self.d_model} mlp {self.d_mlp} {heads}{vocab}"

    def block_macs(self) -> int:
        """Multiply-adds of one block at one position (projections and MLP)."""
        head_dim = self.d_model // self.n_heads
        kv = 2 * self.d_model * self.n_kv_heads * head_dim
        return 2 * self.d_model * self.d_model + kv + 3 * self.d_model * self.d_mlp


SHAPES = {
    "gpt2-small": Shape("gpt2-small", 12, 768, 3072, 12, 12, None,
                        "SMAP Japan group was created in the city of Paris France", "SMAP Japan group", 12, "all"),
    "smollm2": Shape("smollm2", 30, 576, 1536, 9, 3, 49152,
                     "SMAP Japan group was created in the city of Paris", "SMAP Japan group", 11, "1,2,3,10"),
    # the real SmolLM2-135M (`kelocate models fetch smollm2`) on ROME's own example prompt, every row
    "smollm2-real": Shape("smollm2-real", 30, 576, 1536, 9, 3, 49152, "The Eiffel Tower is located in the city of",
                          "The Eiffel Tower", 10, "all", span=(0, 4), real="smollm2"),
}


def padded_tokenizer(vocab: int, seed: int = 0):
    """The random models' BPE tokenizer with unreachable pieces appended up to `vocab` entries."""
    import torch
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from kelocate.organism.tokenizer import train_tokenizer
    from kelocate.testing.random_model import WORDS

    g = torch.Generator().manual_seed(seed)
    texts = [" ".join(WORDS[i] for i in torch.randint(len(WORDS), (8,), generator=g).tolist()) for _ in range(400)]
    spec = json.loads(train_tokenizer(texts, vocab_size=1000).backend_tokenizer.to_str())
    pieces = spec["model"]["vocab"]
    for i in range(len(pieces), vocab):
        pieces[f"\u2581<unused{i}>"] = i  # no merge produces it: never emitted, but a real logit row
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                   clean_up_tokenization_spaces=False)


def build(shape: Shape, model_dir: Path) -> None:
    """Write the shape's random model and tokenizer to `model_dir`."""
    if shape.vocab is None:
        from kelocate.testing.random_model import build_random_llama

        build_random_llama(model_dir, n_layers=shape.n_layers, d_model=shape.d_model, d_mlp=shape.d_mlp,
                           n_heads=shape.n_heads, seed=0)
        return
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kelocate.organism.tokenizer import BOS_ID, EOS_ID, PAD_ID

    tokenizer = padded_tokenizer(shape.vocab)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=shape.d_model, intermediate_size=shape.d_mlp,
                         num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads,
                         num_key_value_heads=shape.n_kv_heads, head_dim=shape.d_model // shape.n_heads,
                         max_position_embeddings=256, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
                         tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=100000.0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.norm.weight.mul_(10.0)  # a sharp answer (tied random weights give p ~ 1e-4 otherwise)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)


@__import__("torch").no_grad()
def plain_hook_grids(hf, problem) -> dict:
    """ROME's per-cell causal trace as ROME runs it, written here from its procedure with plain forward hooks on
    a plain Hugging Face model (no bridge, no kelocate floor): for every cell one forward of 1 + S copies of
    the prompt, row 0 clean, rows 1..S with the noise added to the subject's embeddings (a hook on the
    embedding), and hooks that copy row 0's output into rows 1..S at token t: the decoder layer's output
    (hidden) or, over the window of layers around it, the MLP's or the attention's output. The score is the
    answer's softmax probability at the last position, averaged over rows 1..S."""
    import numpy as np
    import torch

    samples, (s0, s1) = problem.samples, problem.span
    layers = hf.model.layers
    ids = problem.ids[None].repeat(1 + samples, 1).to(hf.device)

    def corrupt(module, args, output):
        output = output.clone()
        output[1:, s0:s1] += problem.noise.to(output.device, output.dtype)
        return output

    def restore(t):
        def hook(module, args, output):
            x = output[0] if isinstance(output, tuple) else output
            x[1:, t] = x[0, t]  # in place: every corrupted row takes the clean row's value
            return output
        return hook

    def score(modules, t) -> float:
        handles = [m.register_forward_hook(restore(t)) for m in modules]
        try:
            logits = hf(ids, use_cache=False).logits[:, -1].float()
        finally:
            for h in handles:
                h.remove()
        return float(torch.softmax(logits, -1)[1:, problem.answer_id].mean())

    embed = hf.model.embed_tokens.register_forward_hook(corrupt)
    try:
        probs = torch.softmax(hf(ids, use_cache=False).logits[:, -1].float(), -1)[:, problem.answer_id]
        n, w = len(layers), problem.window
        grids = {}
        for kind in ("hidden", "mlp", "attn"):
            grid = np.full((len(problem.ids), n), np.nan)
            for t in problem.computed_rows():
                for layer in range(n):
                    if kind == "hidden":
                        modules = [layers[layer]]
                    else:
                        span = range(max(0, layer - w // 2), min(n, layer - (-w // 2)))
                        modules = [layers[j].mlp if kind == "mlp" else layers[j].self_attn for j in span]
                    grid[t, layer] = score(modules, t)
            grids[kind] = grid
    finally:
        embed.remove()
    return {"clean": float(probs[0]), "corrupted": float(probs[1:].mean()), "grids": grids}


def _stage_timers(engine, stack_cls) -> dict[str, float]:
    """Wrap the fast engine's stages with wall-clock timers (for --profile); returns the totals dict."""
    import functools

    totals: dict[str, float] = {}

    def timed(name: str, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    block = stack_cls.block

    def block_stage(self, layer, hidden, start=0, past=None, edits=None, last_only=False):
        name = "blocks, last layer (last position)" if last_only else "blocks (positions t..T-1)"
        return timed(name, block)(self, layer, hidden, start, past, edits, last_only)

    stack_cls.block = block_stage
    stack_cls.unembed = timed("unembedding (final norm + LM head)", stack_cls.unembed)
    engine._Runs = timed("clean and corrupted runs", engine._Runs)
    engine._cells_at = timed("cell set-up (x0, attn MLPs)", engine._cells_at)
    engine._answer_probs = timed("p(answer) incl. unembedding", engine._answer_probs)
    engine._run_chunk = timed("cell batches incl. blocks", engine._run_chunk)
    return totals


def child(args: argparse.Namespace) -> None:
    """Time one implementation on the benchmark problem; write its grids and figures to args.out."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from kelocate.loading import load_model
    from kelocate.locate.causal_trace import engine
    from kelocate.locate.causal_trace.noise import draw_noise
    from kelocate.locate.causal_trace.oracle import oracle_grids, per_cell_grids
    from kelocate.locate.causal_trace.problem import TraceProblem, default_window
    from kelocate.model.stack import LlamaStack, guarded_stack

    shape = SHAPES[args.shape]
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    ids = model.encode(shape.prompt).ids
    span = model.subject_span(shape.prompt, shape.subject)
    if len(ids) != shape.n_tokens or span != shape.span:
        raise SystemExit(f"benchmark prompt is {len(ids)} tokens with subject span {span}; "
                         f"expected {shape.n_tokens} and {shape.span}")
    answer = int(model.logits(ids)[0, -1].argmax())
    sigma = float(model.hf.get_input_embeddings().weight.detach().float().std())
    noise = draw_noise(SAMPLES, span[1] - span[0], model.d_model, "gaussian", 1) * 3 * sigma
    rows = None if args.child == "fast_full" else _rows(args.rows)
    problem = TraceProblem(ids, span, answer, noise, False, KINDS, (), default_window(model.n_layers), rows)
    if args.child == "plain_hooks":  # a plain HF model of the same weights: nothing of kelocate in the loop
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(model.path, dtype=model.hf.dtype).to(model.device).eval()
    run = {
        "plain_hooks": lambda p: _as_grids(plain_hook_grids(hf, p)),
        "oracle": lambda p: oracle_grids(model, p),
        "per_cell": lambda p: per_cell_grids(model, p),
        "fast": lambda p: engine.fast_grids(guarded_stack(model), p),
        "fast_full": lambda p: engine.fast_grids(guarded_stack(model), p),
    }[args.child]
    warm = TraceProblem(ids[:6], span, answer, noise, False, ("hidden",), (), problem.window)
    if args.child.startswith("fast"):
        run(warm)
    elif args.child == "plain_hooks":
        for _ in range(3):
            hf(ids[None].repeat(1 + SAMPLES, 1).to(hf.device), use_cache=False)
    else:  # warm the bridge up with a few forwards
        for _ in range(3):
            model.logits(ids[None].repeat(1 + SAMPLES, 1))
    stages = _stage_timers(engine, LlamaStack) if args.profile and args.child.startswith("fast") else None
    cuda = bool(args.device and args.device.startswith("cuda"))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    rss_before = status_mb("VmRSS")
    reset = reset_peak_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    grids = run(problem)
    sync()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    np.savez(Path(args.out) / f"{args.child}.npz", **grids.grids)
    info = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "clean": grids.clean,
        "corrupted": grids.corrupted,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_run_mb": rss_before,
        "run_peak_rss_mb": status_mb("VmHWM") if reset else None,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "window": problem.window,
        "n_layers": model.n_layers,
        "cells": len(problem.computed_rows()) * model.n_layers * len(KINDS),
        "stages": stages,
    }
    (Path(args.out) / f"{args.child}.json").write_text(json.dumps(info))


def _as_grids(found: dict):
    """The plain-hook result in the engines' `Grids` shape."""
    from kelocate.locate.causal_trace.problem import Grids

    return Grids(found["clean"], found["corrupted"], found["grids"])


def _rows(text: str) -> tuple[int, ...] | None:
    return None if text == "all" else tuple(int(r) for r in text.split(","))


def _run_children(args: argparse.Namespace, shape: Shape, names: list[str]) -> dict[str, dict]:
    """Build the model once, run each implementation in its own process, collect figures and grids."""
    import numpy as np

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        if shape.real:
            model_dir = shape.real  # the real model, as kelocate.load_model finds it
        else:
            build(shape, model_dir)
        for name in names:
            cmd = [sys.executable, __file__, "--child", name, "--model", str(model_dir), "--out", tmp,
                   "--threads", str(args.threads), "--shape", shape.name, "--rows", args.rows]
            cmd += ["--device", args.device] if args.device else []
            cmd += ["--dtype", args.dtype] if args.dtype else []
            cmd += ["--profile"] if args.profile else []
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            subprocess.run(cmd, check=True, env=env)
            results[name] = json.loads((Path(tmp) / f"{name}.json").read_text())
            results[name]["grids"] = dict(np.load(Path(tmp) / f"{name}.npz"))
            print(f"  {name:9s} {results[name]['seconds']:8.2f} s", flush=True)
    return results


def _max_diff(a: dict, b: dict) -> float:
    """Largest |a - b| over the grids (rows both computed) and the clean and corrupted scores."""
    import numpy as np

    diff = max(float(np.nanmax(np.abs(a["grids"][k] - b["grids"][k]))) for k in KINDS)
    return max(diff, abs(a["clean"] - b["clean"]), abs(a["corrupted"] - b["corrupted"]))


def figures_of(args: argparse.Namespace, shape: Shape, results: dict[str, dict]) -> dict[str, object]:
    """The benchmark's figures (the JSON line)."""
    from kelocate.locate.causal_trace.engine import work_units

    info = next(iter(results.values()))
    units = _units(shape, info, _rows(args.rows))
    base, fast, full = results.get("oracle"), results.get("fast"), results.get("fast_full")
    figures: dict[str, object] = {
        "shape": shape.name,
        "rows": args.rows,
        "threads": args.threads,
        "device": args.device or "cpu",
        "dtype": args.dtype or "float32",
        "window": info["window"],
        "seconds": {k: round(v["seconds"], 3) for k, v in results.items()},
        "cpu_seconds": {k: round(v["cpu_seconds"], 3) for k, v in results.items()},
        "peak_rss_mb": {k: round(v["peak_rss_mb"], 1) for k, v in results.items()},
        "bound": round(units["bound_speedup"], 3),
        "engine_ops_bound": round(units["engine_speedup"], 3),
    }
    for key in ("rss_before_run_mb", "run_peak_rss_mb"):
        if all(v[key] for v in results.values()):
            figures[key] = {k: round(v[key], 1) for k, v in results.items()}
    if any(v["peak_gpu_mb"] for v in results.values()):
        figures["peak_gpu_mb"] = {k: round(v["peak_gpu_mb"], 1) for k, v in results.items()}
    if base and fast:
        speedup = base["seconds"] / fast["seconds"]
        figures |= {
            "speedup_vs_oracle": round(speedup, 3),
            "cpu_speedup_vs_oracle": round(base["cpu_seconds"] / fast["cpu_seconds"], 3),
            "fraction_of_bound": round(speedup / units["bound_speedup"], 3),
            "fraction_of_engine_ops_bound": round(speedup / units["engine_speedup"], 3),
            "max_abs_diff": _max_diff(fast, base),
        }
    if "per_cell" in results and fast:
        figures["speedup_vs_per_cell"] = round(results["per_cell"]["seconds"] / fast["seconds"], 3)
    plain = results.get("plain_hooks")
    if plain and (fast or full):
        ours = fast or full
        figures["speedup_vs_plain_hooks"] = round(plain["seconds"] / ours["seconds"], 3)
        figures["cpu_speedup_vs_plain_hooks"] = round(plain["cpu_seconds"] / ours["cpu_seconds"], 3)
        figures["plain_hooks_max_abs_diff"] = _max_diff(ours, plain)
    if plain and base:
        figures["oracle_vs_plain_hooks"] = round(base["seconds"] / plain["seconds"], 3)
    if base and "per_cell" in results:
        figures["per_cell_vs_oracle_max_abs_diff"] = _max_diff(results["per_cell"], base)
    if full:
        full_units = work_units(**_units_args(shape, info, None))
        figures["full_grid"] = {"fast_seconds": round(full["seconds"], 3),
                                "fast_cpu_seconds": round(full["cpu_seconds"], 3),
                                "engine_ops_bound": round(full_units["engine_speedup"], 3)}
        if fast:
            figures["full_grid"]["fast_vs_fast_rows_max_abs_diff"] = _max_diff(full, fast)
        if base:
            estimate = base["seconds"] / base["cells"] * full["cells"]
            figures["full_grid"] |= {
                "oracle_seconds_estimate": round(estimate, 3),
                "speedup_vs_oracle_estimate": round(estimate / full["seconds"], 3),
                "cpu_speedup_vs_oracle_estimate": round(
                    base["cpu_seconds"] / base["cells"] * full["cells"] / full["cpu_seconds"], 3),
            }
    profiled = full or fast
    if profiled and profiled.get("stages"):
        figures["fast_stages_s"] = {k: round(v, 3) for k, v in profiled["stages"].items()}
    return figures


def _units_args(shape: Shape, info: dict, rows: tuple[int, ...] | None) -> dict:
    macs = shape.block_macs()
    head_dim = shape.d_model // shape.n_heads
    vocab = shape.vocab or 0
    return dict(n_tokens=shape.n_tokens, subject_start=1, n_layers=info["n_layers"], samples=SAMPLES, kinds=KINDS,
                window=info["window"], kv_fraction=2 * shape.d_model * shape.n_kv_heads * head_dim / macs,
                vocab_units=shape.d_model * vocab / macs, rows=rows)


def _units(shape: Shape, info: dict, rows: tuple[int, ...] | None) -> dict[str, float]:
    from kelocate.locate.causal_trace.engine import work_units

    return work_units(**_units_args(shape, info, rows))


def report(args: argparse.Namespace, shape: Shape, results: dict[str, dict], figures: dict) -> None:
    """Print the readable table and the JSON line."""
    info = next(iter(results.values()))
    units = _units(shape, info, _rows(args.rows))
    rows = "all rows" if args.rows == "all" else f"rows {args.rows}"
    print()
    first, last = shape.span[0], shape.span[1] - 1
    print(f"causal tracing, {shape.describe()}, {shape.n_tokens} tokens, subject {first}..{last}, {SAMPLES} samples, "
          f"kinds {'/'.join(KINDS)}, window {info['window']}, {args.threads} threads, "
          f"{figures['device']} {figures['dtype']}")
    base = results.get("oracle")
    print(f"{'implementation':16s} {'rows':>9s} {'cells':>6s} {'seconds':>9s} {'cpu s':>9s} {'x oracle':>9s} "
          f"{'peak RSS MB':>12s} {'RSS before':>11s} {'run peak':>9s}")
    for name, r in results.items():
        ratio = base["seconds"] / r["seconds"] if base and name != "fast_full" else float("nan")
        before = f"{r['rss_before_run_mb']:11.0f}" if r["rss_before_run_mb"] else f"{'-':>11s}"
        run_peak = f"{r['run_peak_rss_mb']:9.0f}" if r["run_peak_rss_mb"] else f"{'-':>9s}"
        label = "all" if name == "fast_full" or args.rows == "all" else args.rows
        print(f"{name:16s} {label:>9s} {r['cells']:6d} {r['seconds']:9.2f} {r['cpu_seconds']:9.2f} {ratio:9.2f} "
              f"{r['peak_rss_mb']:12.0f} {before} {run_peak}")
    print(f"work units on {rows} (block x position x row, logits included): oracle {units['oracle']:.0f}, "
          f"per-cell {units['per_cell']:.0f}, skipping bound {units['bound']:.0f} ({units['bound_speedup']:.2f}x), "
          f"this engine {units['engine']:.0f} ({units['engine_speedup']:.2f}x)")
    if "speedup_vs_oracle" in figures:
        print(f"fast vs oracle on {rows}: {figures['speedup_vs_oracle']:.2f}x = {figures['fraction_of_bound']:.0%} "
              f"of the {units['bound_speedup']:.2f}x bound ({figures['fraction_of_engine_ops_bound']:.0%} of the "
              f"engine's own op-count ratio); max |fast - oracle| = {figures['max_abs_diff']:.2e}")
    full = figures.get("full_grid")
    if full and "speedup_vs_oracle_estimate" in full:
        print(f"full grid: fast {full['fast_seconds']:.2f} s measured; oracle {full['oracle_seconds_estimate']:.0f} s "
              f"estimated (its seconds per cell on {rows} x all cells) -> {full['speedup_vs_oracle_estimate']:.2f}x "
              f"(CPU time {full['cpu_speedup_vs_oracle_estimate']:.2f}x; op-count ratio "
              f"{full['engine_ops_bound']:.2f}x)")
    if figures.get("fast_stages_s"):
        total = figures["seconds"].get("fast_full") or figures["seconds"]["fast"]
        print("fast engine stages (wall seconds, nested stages overlap):")
        for stage, seconds in sorted(figures["fast_stages_s"].items(), key=lambda kv: -kv[1]):
            print(f"  {stage:40s} {seconds:8.2f} s {seconds / total:6.1%}")
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="gpt2-small")
    parser.add_argument("--rows", default=None, help="token rows: 'all' or indices (default: by shape)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--only", default=None, help="implementations to run (default: all that apply)")
    parser.add_argument("--profile", action="store_true", help="time the fast engine's stages")
    parser.add_argument("--child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    args.rows = args.rows or shape.default_rows
    if args.child:
        child(args)
        return
    names = [n for n in IMPLEMENTATIONS if n != "fast_full" or args.rows != "all"]
    names = args.only.split(",") if args.only else names
    results = _run_children(args, shape, names)
    report(args, shape, results, figures_of(args, shape, results))


if __name__ == "__main__":
    main()
