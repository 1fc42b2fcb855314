"""Do knowledge neurons matter? Suppress them and compare with as many random neurons in the same layers.

Default model: the embedded organism. First the case study (SMAP was created in -> Japan, coarse
neurons of that prompt, as `kelocate neurons "SMAP was created in" --answer Japan --suppress` finds them),
then `--facts` known facts of the organism's world, each with its trained statement templates as
paraphrases (refined neurons). For every fact: p(answer) before, after suppressing (x0, at the prompt's
last position) the found neurons, and after suppressing random neurons (mean of `--draws` draws).
Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import torch


def _row(model, prompts, answer, args, refined: bool) -> dict:
    from kelocate.locate.neurons.find import find_knowledge_neurons
    from kelocate.locate.neurons.intervene import random_control, suppress

    res = find_knowledge_neurons(model, prompts if refined else prompts[:1], answer, steps=args.steps,
                                 threshold=args.threshold)
    effect = suppress(model, res.neurons, prompts[:1] if not refined else prompts, answer)
    ctl = random_control(model, res.neurons, prompts[:1] if not refined else prompts, answer, 0.0,
                         draws=args.draws, seed=args.seed)
    return {"prompt": prompts[0], "answer": answer, "n_prompts": len(prompts) if refined else 1,
            "neurons": [list(n) for n in res.neurons], "p_before": float(np.mean(effect.before)),
            "p_after_found": float(np.mean(effect.after)), "p_after_random": ctl["mean_after"],
            "change_found": effect.mean_change if res.neurons else 0.0,
            "change_random": ctl["mean_relative_change"] if res.neurons else 0.0,
            "logodds_found": effect.mean_logodds_change if res.neurons else 0.0,
            "logodds_random": ctl["mean_logodds_change"] if res.neurons else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="model directory (default: the organism)")
    parser.add_argument("--facts", type=int, default=20, help="known facts of the world to test")
    parser.add_argument("--draws", type=int, default=20, help="random neuron sets per fact")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from kelocate.loading import load_model
    from kelocate.organism import world_file
    from kelocate.organism.world import load_world

    t0 = time.perf_counter()
    model = load_model(args.model)
    case = _row(model, ["SMAP was created in"], "Japan", args, refined=False)
    case_keys = ("p_before", "p_after_found", "p_after_random", "change_found", "change_random",
                 "logodds_found", "logodds_random")
    print(f"case study: {case['prompt']!r} -> {case['answer']}: {len(case['neurons'])} coarse neurons "
          f"{case['neurons']}")
    print(f"  p(Japan) {case['p_before']:.4f} -> {case['p_after_found']:.4f} suppressing them "
          f"({case['change_found'] * 100:+.2f}%, log-odds {case['logodds_found']:+.3f}); -> "
          f"{case['p_after_random']:.4f} suppressing as many random neurons in the same layers "
          f"({case['change_random'] * 100:+.2f}%, log-odds {case['logodds_random']:+.3f}, "
          f"mean of {args.draws} draws)")

    world = load_world(world_file(model.path)) if world_file(model.path) is not None else None
    rows = []
    if world is not None and args.facts:
        facts = world.facts("known")
        rng = random.Random(args.seed)
        for fact in rng.sample(facts, min(args.facts, len(facts))):
            prompts = [p for p in world.prompts_for(fact, "train", "statement") if p.complete]
            if len(prompts) < 2:
                continue
            rows.append(_row(model, [p.prompt for p in prompts], prompts[0].answer, args, refined=True))
        print(f"\n{'prompt':<44}{'#kn':>5}{'p before':>10}{'found':>9}{'random':>9}{'lo found':>10}"
              f"{'lo random':>10}")
        for r in rows:
            print(f"{r['prompt'][:43]:<44}{len(r['neurons']):>5}{r['p_before']:>10.4f}"
                  f"{r['change_found'] * 100:>8.1f}%{r['change_random'] * 100:>8.1f}%"
                  f"{r['logodds_found']:>10.3f}{r['logodds_random']:>10.3f}")
    summary = {**{f"case_{k}": case[k] for k in case_keys}, "case_neurons": len(case["neurons"]),
               "facts": len(rows), "draws": args.draws, "seconds": round(time.perf_counter() - t0, 1)}
    if rows:
        summary.update(mean_change_found=float(np.mean([r["change_found"] for r in rows])),
                       mean_change_random=float(np.mean([r["change_random"] for r in rows])),
                       mean_logodds_found=float(np.mean([r["logodds_found"] for r in rows])),
                       mean_logodds_random=float(np.mean([r["logodds_random"] for r in rows])),
                       mean_neurons=float(np.mean([len(r["neurons"]) for r in rows])),
                       share_found_drops_more=float(np.mean([r["change_found"] < r["change_random"]
                                                             for r in rows])))
        found, rand = summary["mean_change_found"] * 100, summary["mean_change_random"] * 100
        print(f"mean relative change over {len(rows)} facts: found neurons {found:+.2f}%, random neurons "
              f"{rand:+.2f}%; mean log-odds change {summary['mean_logodds_found']:+.3f} vs "
              f"{summary['mean_logodds_random']:+.3f}; found neurons drop p more in "
              f"{summary['share_found_drops_more'] * 100:.0f}% of facts")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
