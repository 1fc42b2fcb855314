"""Write training edits for the SmolLM2 MEND / SERAC miniatures from `smollm2_facts.jsonl`: for each fact
except the Eiffel Tower's (the one the README edits), `--targets` counterfactual targets drawn from the other
facts' answers, two templated paraphrases, two other facts as neighbours and one unrelated prompt.

    python examples/smollm2_training_edits.py edits.jsonl [--targets 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--targets", type=int, default=3)
    args = parser.parse_args()
    facts = [json.loads(line) for line in (Path(__file__).parent / "smollm2_facts.jsonl").read_text().splitlines()]
    answers = sorted({f["answer"] for f in facts})
    rows = []
    for i, fact in enumerate(facts):
        if fact["subject"] == "Eiffel Tower":
            continue
        prompt = fact["prompt"]
        others = [a for a in answers if a != fact["answer"]]
        near = [facts[(i + k) % len(facts)] for k in (2, 5)]
        for d in range(args.targets):
            target = others[(i * 7 + d * 5) % len(others)]
            rows.append({"prompt": prompt, "subject": fact["subject"], "target_new": target,
                         "ground_truth": fact["answer"],
                         "paraphrases": [f"As everyone knows, {prompt[0].lower() + prompt[1:]}", f"Fact: {prompt}"],
                         "neighbours": [[n["prompt"], n["answer"]] for n in near if n["subject"] != "Eiffel Tower"],
                         "unrelated": [facts[(i + 7) % len(facts)]["prompt"]]})
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} training edits written to {args.out}")


if __name__ == "__main__":
    main()
