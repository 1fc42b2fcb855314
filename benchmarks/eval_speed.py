"""Batched KnowEdit metrics against scoring the same prompts one at a time, on the organism.

Takes 200 cases from the organism's exported ZsRE and WikiData_counterfact test files and computes every
teacher-forced column (edit, rephrase, portability per sub-type with every alias, locality against the
unedited model) twice: with the batched scorer (`teacher_forced_many`, batches of 64 sorted by length) and
with one forward per prompt (the same code with batch size 1). Prints the time of each, the ratio (target
>= 5x), whether every number is identical, and a last line of JSON.

    python benchmarks/eval_speed.py [--cases 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from kelocate.loading import load_model
from kelocate.organism.datasets import organism_knowedit_dir
from kelocate.studies.knowedit.metrics import baseline, teacher_forced_many
from kelocate.studies.knowedit.plan import load_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model()
    folder = organism_knowedit_dir(model)
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    cases = []
    for task in ("ZsRE", "WikiData_counterfact"):
        cases += load_cases(str(folder / manifest[f"{task}/test"]["path"]), task)[: args.cases // 2]
    befores = baseline(model, cases)
    items = sum(1 + bool(c.rephrase) + sum(len(p.answers) for ps in c.portability.values() for p in ps)
                + sum(len(ps) for ps in c.locality.values()) for c in cases)
    start = time.perf_counter()
    batched = teacher_forced_many(model, cases, befores)
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    single = teacher_forced_many(model, cases, befores, batch_size=1)
    single_s = time.perf_counter() - start
    differing = sum(a != b for x, y in zip(batched, single, strict=True) for a, b in zip(x.values(), y.values(),
                                                                                             strict=True))
    ratio = single_s / batched_s
    print(f"{len(cases)} cases, {items} scored (prompt, answer) items, {args.threads} threads")
    print(f"batched: {batched_s:.2f} s; one at a time: {single_s:.2f} s; ratio {ratio:.1f}x (target >= 5x)")
    print(f"identical numbers: {differing == 0} ({differing} of {sum(len(x) for x in batched)} values differ)")
    print(json.dumps({"cases": len(cases), "items": items, "batched_s": round(batched_s, 3),
                      "single_s": round(single_s, 3), "ratio": round(ratio, 2), "identical": differing == 0,
                      "threads": args.threads}))


if __name__ == "__main__":
    main()
