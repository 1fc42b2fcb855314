"""Knowledge-neuron attribution speed: the fast IG engine (prefix reuse) vs the reference (full forwards).

A random Llama of GPT-2-small size (12 layers, d_model 768, d_mlp 3072, 12 heads), a 12-token prompt,
20 IG steps, all layers. Prints seconds of both engines, the speed-up and the largest relative
difference of the attribution scores (max |fast - reference| / max |reference|), then one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per engine")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from kelocate.loading import load_model
    from kelocate.locate.neurons.ig import ig_fast, ig_reference, make_problem
    from kelocate.testing.random_model import build_random_llama

    with tempfile.TemporaryDirectory() as tmp:
        path = build_random_llama(tmp, n_layers=args.layers, d_model=args.d_model, d_mlp=4 * args.d_model,
                                  n_heads=12, vocab_size=1000, seed=0)
        model = load_model(path, device=args.device)
    words = "the capital city of the river France was created in the old".split()
    prompt, n = "", 0
    for w in words:  # grow the prompt to exactly 12 tokens (BOS included)
        trial = (prompt + " " + w).strip()
        if len(model.encode(trial)) > 12:
            break
        prompt, n = trial, len(model.encode(trial))
    problem = make_problem(model, prompt, "Japan")

    def best(engine):
        times, out = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = engine(model, problem, args.steps)
            if args.device != "cpu":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return min(times), out

    ig_fast(model, problem, 2)  # warm-up
    ig_reference(model, problem, 2)
    t_ref, ref = best(ig_reference)
    t_fast, fast = best(ig_fast)
    rel = float((fast.scores - ref.scores).abs().max() / ref.scores.abs().max())
    print(f"model: random Llama, {model.n_layers} layers, d_model {model.d_model}, d_mlp {model.d_mlp}; "
          f"prompt {n} tokens; {args.steps} steps; all layers; {args.threads} threads; {args.device}")
    print(f"{'engine':<12}{'seconds':>10}")
    print(f"{'reference':<12}{t_ref:>10.3f}")
    print(f"{'fast':<12}{t_fast:>10.3f}")
    print(f"speed-up: {t_ref / t_fast:.1f}x   max relative difference of scores: {rel:.2e}")
    print(json.dumps({"reference_s": round(t_ref, 4), "fast_s": round(t_fast, 4),
                      "speedup_vs_reference": round(t_ref / t_fast, 2), "max_rel_diff": rel,
                      "prompt_tokens": n, "steps": args.steps, "layers": model.n_layers,
                      "device": args.device}))


if __name__ == "__main__":
    main()
