"""Causal-tracing speed: the fast exact engine against the per-cell oracle and TransformerLens-style patching.

Setup (issue 3): a random-weight Llama of GPT-2-small size (12 layers, d_model 768, d_mlp 3072, 12 heads;
the random tokenizer's small vocabulary), a 12-token prompt (BOS included) with a 3-token subject starting at
position 1, 10 noise samples, all three kinds (hidden, mlp, attn; window by the default rule).

Each implementation runs in its own child process (so that its peak memory is its own):
- oracle: ROME's procedure, one `bridge.run_with_hooks` forward of batch 1+S per cell;
- per_cell: clean activations cached once, one `bridge.run_with_hooks` forward of batch S per cell
  (how TransformerLens's patching utilities work);
- fast: `kelocate.locate.causal_trace.engine.fast_grids`.

Prints a table, the bound that exact skipping allows (from operation counts, `work_units`), the achieved
fraction of it, the largest difference of the fast grids from the oracle, and ends with one JSON line.

    python benchmarks/trace_speed.py [--threads 2] [--device cpu|cuda] [--dtype float32|bfloat16]
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
from pathlib import Path

PROMPT = "SMAP Japan group was created in the city of Paris France"
SUBJECT = "SMAP Japan group"
KINDS = ("hidden", "mlp", "attn")
SAMPLES = 10
IMPLEMENTATIONS = ("oracle", "per_cell", "fast")


def build(model_dir: Path) -> None:
    from kelocate.random_model import build_random_llama

    build_random_llama(model_dir, n_layers=12, d_model=768, d_mlp=3072, n_heads=12, seed=0)


def child(args: argparse.Namespace) -> None:
    """Time one implementation on the benchmark problem; write its grids and figures to args.out."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from kelocate.loading import load_model
    from kelocate.locate.causal_trace.engine import fast_grids
    from kelocate.locate.causal_trace.noise import draw_noise
    from kelocate.locate.causal_trace.oracle import oracle_grids, per_cell_grids
    from kelocate.locate.causal_trace.problem import TraceProblem, default_window
    from kelocate.model.stack import guarded_stack

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    ids = model.encode(PROMPT).ids
    span = model.subject_span(PROMPT, SUBJECT)
    if len(ids) != 12 or span != (1, 4):
        raise SystemExit(
            f"benchmark prompt is {len(ids)} tokens with subject span {span}; expected 12 and (1, 4)"
        )
    answer = int(model.logits(ids)[0, -1].argmax())
    sigma = float(model.hf.get_input_embeddings().weight.detach().float().std())
    noise = draw_noise(SAMPLES, 3, model.d_model, "gaussian", 1) * 3 * sigma
    problem = TraceProblem(ids, span, answer, noise, False, KINDS, (), default_window(model.n_layers))
    run = {
        "oracle": lambda p: oracle_grids(model.bridge, p),
        "per_cell": lambda p: per_cell_grids(model.bridge, p),
        "fast": lambda p: fast_grids(guarded_stack(model), p),
    }[args.child]
    warm = TraceProblem(ids[:6], span, answer, noise, False, ("hidden",), (), problem.window)
    if args.child == "fast":
        run(warm)
    else:  # warm the bridge up with a few forwards
        for _ in range(3):
            model.bridge.run_with_hooks(ids[None].repeat(1 + SAMPLES, 1).to(model.device))
    sync = torch.cuda.synchronize if args.device and args.device.startswith("cuda") else (lambda: None)
    if args.device and args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    grids = run(problem)
    sync()
    seconds = time.perf_counter() - start
    peak_gpu = (
        torch.cuda.max_memory_allocated() / 2**20 if args.device and args.device.startswith("cuda") else None
    )
    np.savez(Path(args.out) / f"{args.child}.npz", **grids.grids)
    info = {
        "seconds": seconds,
        "clean": grids.clean,
        "corrupted": grids.corrupted,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": peak_gpu,
        "window": problem.window,
        "n_layers": model.n_layers,
    }
    (Path(args.out) / f"{args.child}.json").write_text(json.dumps(info))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--only", default=",".join(IMPLEMENTATIONS), help="implementations to run")
    parser.add_argument("--child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import numpy as np

    from kelocate.locate.causal_trace.engine import work_units

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        build(model_dir)
        results = {}
        for name in args.only.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                name,
                "--model",
                str(model_dir),
                "--out",
                tmp,
                "--threads",
                str(args.threads),
            ]
            cmd += ["--device", args.device] if args.device else []
            cmd += ["--dtype", args.dtype] if args.dtype else []
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            subprocess.run(cmd, check=True, env=env)
            results[name] = json.loads((Path(tmp) / f"{name}.json").read_text())
            results[name]["grids"] = dict(np.load(Path(tmp) / f"{name}.npz"))
            print(f"  {name:9s} {results[name]['seconds']:8.2f} s", flush=True)

    info = next(iter(results.values()))
    units = work_units(12, 1, info["n_layers"], SAMPLES, KINDS, info["window"])
    base = results.get("oracle")
    fast = results.get("fast")
    figures: dict[str, object] = {
        "threads": args.threads,
        "device": args.device or "cpu",
        "dtype": args.dtype or "float32",
        "window": info["window"],
        "seconds": {k: round(v["seconds"], 3) for k, v in results.items()},
        "peak_rss_mb": {k: round(v["peak_rss_mb"], 1) for k, v in results.items()},
        "bound": round(units["bound_speedup"], 3),
        "engine_ops_bound": round(units["engine_speedup"], 3),
    }
    if any(v["peak_gpu_mb"] for v in results.values()):
        figures["peak_gpu_mb"] = {k: round(v["peak_gpu_mb"], 1) for k, v in results.items()}
    if base and fast:
        speedup = base["seconds"] / fast["seconds"]
        diff = max(float(np.abs(fast["grids"][k] - base["grids"][k]).max()) for k in KINDS)
        diff = max(diff, abs(fast["clean"] - base["clean"]), abs(fast["corrupted"] - base["corrupted"]))
        figures |= {
            "speedup_vs_oracle": round(speedup, 3),
            "fraction_of_bound": round(speedup / units["bound_speedup"], 3),
            "fraction_of_engine_ops_bound": round(speedup / units["engine_speedup"], 3),
            "max_abs_diff": diff,
        }
    if "per_cell" in results and fast:
        figures["speedup_vs_per_cell"] = round(results["per_cell"]["seconds"] / fast["seconds"], 3)
    if base and "per_cell" in results:
        figures["per_cell_vs_oracle_max_abs_diff"] = max(
            float(np.abs(results["per_cell"]["grids"][k] - base["grids"][k]).max()) for k in KINDS
        )

    print()
    print(
        f"causal tracing, 12 layers d768, 12 tokens, subject 1..3, {SAMPLES} samples, "
        f"kinds {'/'.join(KINDS)}, window {info['window']}, {args.threads} threads, "
        f"{figures['device']} {figures['dtype']}"
    )
    print(f"{'implementation':16s} {'seconds':>9s} {'x oracle':>9s} {'peak RSS MB':>12s}")
    for name, r in results.items():
        ratio = base["seconds"] / r["seconds"] if base else float("nan")
        print(f"{name:16s} {r['seconds']:9.2f} {ratio:9.2f} {r['peak_rss_mb']:12.0f}")
    print(
        f"work units (block x position x row): oracle {units['oracle']:.0f}, "
        f"per-cell {units['per_cell']:.0f}, "
        f"skipping bound {units['bound']:.0f} ({units['bound_speedup']:.2f}x), "
        f"this engine {units['engine']:.0f} ({units['engine_speedup']:.2f}x)"
    )
    if "speedup_vs_oracle" in figures:
        print(
            f"fast vs oracle: {figures['speedup_vs_oracle']:.2f}x = {figures['fraction_of_bound']:.0%} of "
            f"the {units['bound_speedup']:.2f}x bound ({figures['fraction_of_engine_ops_bound']:.0%} of the "
            f"engine's own op-count ratio); max |fast - oracle| = {figures['max_abs_diff']:.2e}"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
