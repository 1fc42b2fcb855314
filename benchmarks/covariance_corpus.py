"""What the key-statistics corpus does to MEMIT and AlphaEdit (a measurement, not a speed benchmark).

The reference statistics take 100,000 Wikipedia texts; offline, kelocate takes text the model generates
(SmolLM2: 300 texts x 64 tokens) unless a corpus is given. This script builds a corpus of real text from the
published files (WikiBio's Wikipedia passages and CounterFact's prompts, one text per line), then for each
corpus ("model": the generated text; "real": that file) measures on N CounterFact facts the model knows:

- AlphaEdit's kept null-space dimensions per edited layer (eigenvalues of E[k k^T] below its threshold);
- MEMIT's and AlphaEdit's edit success (teacher-forced accuracy of the new target), paraphrase success, and
  locality (the reference's: per neighbourhood prompt, the share of the true answer's positions whose argmax
  is unchanged from the unedited model's), each edit reverted before the next.

    python benchmarks/covariance_corpus.py --model smollm2 --counterfact FILE --wikibio FILE [--facts 10]

Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path


def real_text(counterfact: str, wikibio: str, out: Path) -> Path:
    """One text per line: WikiBio's passages, then CounterFact's prompts (subject filled in), paraphrases and
    neighbourhood prompts; shuffled with a fixed seed (the statistics take the first texts)."""
    texts = [r["text"] for r in json.loads(Path(wikibio).read_text())]
    for record in json.loads(Path(counterfact).read_text()):
        rewrite = record["requested_rewrite"]
        texts.append(rewrite["prompt"].replace("{}", rewrite["subject"]))
        texts += record.get("paraphrase_prompts", []) + record.get("neighborhood_prompts", [])
    texts = [" ".join(t.split()) for t in texts if t.strip()]
    random.Random(0).shuffle(texts)
    out.write_text("\n".join(texts) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--counterfact", required=True)
    parser.add_argument("--wikibio", required=True)
    parser.add_argument("--facts", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="kelocate_out/covariance_corpus")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from kelocate.edit import editor
    from kelocate.edit.covariance import covariance
    from kelocate.edit.methods.alphaedit import null_space_projection
    from kelocate.loading import load_model
    from kelocate.model.scoring import score_targets
    from kelocate.studies.knowedit.easyedit_metrics import accuracy, predicted_tokens
    from kelocate.studies.knowedit.plan import load_cases

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus_file = real_text(args.counterfact, args.wikibio, out / "real_text.txt")
    model = load_model(args.model)
    cases = load_cases(args.counterfact, "auto")
    random.Random(0).shuffle(cases)
    known = []
    for case in cases:  # facts the model recalls, with neighbourhood prompts
        if case.locality and score_targets(model, [case.prompt], [case.ground_truth])[0].correct:
            known.append(case)
            if len(known) == args.facts:
                break
    probes = [(c, p) for c in known for p in c.locality["Neighborhood"]]
    before = [pred for pred, _ in predicted_tokens(model, [p.prompt for _, p in probes],
                                                   [p.ground_truth for _, p in probes])]
    figures: dict = {"model": args.model, "facts": len(known), "texts_in_real_corpus":
                     sum(1 for _ in corpus_file.open()), "corpora": {}}
    for name, corpus in (("model", None), ("real", str(corpus_file))):
        start = time.perf_counter()
        alpha = editor("alphaedit", corpus=corpus)
        hp = alpha.hparams(model)
        dims, sources = {}, {}
        for layer in hp["layers"]:
            cov, source = covariance(model, layer, hp, corpus)
            dims[layer] = null_space_projection(cov, hp["nullspace_threshold"])[1]
            sources[layer] = source
        result = {"null_space_dims": dims, "d_mlp": model.d_mlp, "source": sources[hp["layers"][0]]}
        for method in ("memit", "alphaedit"):
            edit, para, local = [], [], []
            for case in known:
                record = editor(method, corpus=corpus).apply(model, {"prompt": case.prompt, "subject": case.subject,
                                                                     "target_new": case.target_new})
                try:
                    pairs = predicted_tokens(model, [case.prompt, *case.paraphrase_prompts],
                                             [case.target_new] * (1 + len(case.paraphrase_prompts)))
                    edit.append(accuracy(pairs[0]))
                    para += [accuracy(p) for p in pairs[1:]]
                    mine = [(i, p) for i, (c, p) in enumerate(probes) if c is case]
                    after = predicted_tokens(model, [p.prompt for _, p in mine], [p.ground_truth for _, p in mine])
                    local += [sum(a == b for a, b in zip(new, before[i], strict=True)) / len(before[i])
                              for (i, _), (new, _) in zip(mine, after, strict=True)]
                finally:
                    record.revert()
            result[method] = {"edit": sum(edit) / len(edit), "paraphrase": sum(para) / max(1, len(para)),
                              "locality": sum(local) / max(1, len(local))}
        result["seconds"] = round(time.perf_counter() - start, 1)
        figures["corpora"][name] = result
        print(f"{name:6s} null-space dims {dims} of {model.d_mlp}; " + "; ".join(
            f"{m}: edit {result[m]['edit']:.3f} paraphrase {result[m]['paraphrase']:.3f} locality "
            f"{result[m]['locality']:.3f}" for m in ("memit", "alphaedit")), flush=True)
    (out / "covariance_corpus.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
