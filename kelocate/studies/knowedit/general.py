"""General ability before and after edits (the comprehensive study's Table 5, on what the organism can be
asked): recall of known facts no edit touches (teacher-forced token accuracy of their answers) and the
perplexity of held-out text (sentences the model never trained on), both through the one batched scorer.

On the organism both sets come from its world (`kelocate.organism.datasets.organism_general_set`): facts of
subjects outside the edited cases, and those facts stated through held-out templates. Other models take them
from files (`kelocate.data.general.load_general_set`: JSONL of {prompt, answer}, and plain text, one passage
per line). Both give a `kelocate.data.general.GeneralSet`. Beside it, the study can run lm-evaluation-harness tasks
(`harness.py`: the paper's benchmarks where their data is at hand); `GeneralMeasure` holds both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kelocate.data.general import GeneralSet
from kelocate.model.scoring import score_ids, score_targets
from kelocate.studies.knowedit.harness import HarnessSpec, harness_scores


@dataclass(frozen=True)
class GeneralMeasure:
    """What general ability is measured on: kelocate's own set (facts, texts) and/or lm-eval's tasks."""

    set: GeneralSet | None = None
    harness: HarnessSpec | None = None


def perplexity(model, texts: Sequence[str]) -> float:
    """exp(mean negative log-likelihood per token) of the texts (every token after the first)."""
    rows = [model.encode(t).ids.tolist() for t in texts]
    rows = [r for r in rows if len(r) > 1]
    if not rows:
        return float("nan")
    scores = score_ids(model.logits, [r[:1] for r in rows], [r[1:] for r in rows], model.pad_id,
                       device=model.device)
    total = sum(-s.logprob for s in scores)
    return math.exp(total / sum(len(r) - 1 for r in rows))


def general_ability(model, measure: GeneralMeasure) -> dict[str, float]:
    """Recall of the facts (mean token accuracy) and perplexity of the texts, and lm-eval's metrics
    (`harness.<task>.<metric>`; not for a model answering through a served editor, whose weights lm-eval
    would score instead), on the model as it is now."""
    out: dict[str, float] = {}
    if measure.harness is not None and not len(model.serving):
        out |= harness_scores(model, measure.harness)
    general = measure.set
    if general is None:
        return out
    if general.facts:
        scores = score_targets(model, [p for p, _ in general.facts], [a for _, a in general.facts])
        out["general_recall"] = sum(s.accuracy for s in scores) / len(scores)
    if general.texts:
        out["general_perplexity"] = perplexity(model, general.texts)
    return out
