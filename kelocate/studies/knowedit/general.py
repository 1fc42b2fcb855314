"""General ability before and after edits (the comprehensive study's Table 5, on what the organism can be
asked): recall of known facts no edit touches (teacher-forced token accuracy of their answers) and the
perplexity of held-out text (sentences the model never trained on), both through the one batched scorer.

On the organism both sets come from its world (`organism_general_set`): facts of subjects outside the
edited cases, and those facts stated through held-out templates. Other models take them from files
(`load_general_set`: JSONL of {prompt, answer}, and plain text, one passage per line).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kelocate.errors import KelocateError
from kelocate.model.scoring import score_ids, score_targets


@dataclass(frozen=True)
class GeneralSet:
    """Facts to recall (prompt, answer) and held-out texts to score."""

    facts: tuple[tuple[str, str], ...]
    texts: tuple[str, ...]


def organism_general_set(model, world, exclude_subjects: Iterable[str], n: int = 100, seed: int = 0) -> GeneralSet:
    """n known single-answer facts of subjects not in `exclude_subjects` (first training template, the model
    recalls them), and the same facts through held-out templates as text."""
    excluded = set(exclude_subjects)
    facts = [f for f in world.facts("known") if f.subject not in excluded
             and not world.relations[f.relation].one_to_many]
    random.Random(seed).shuffle(facts)
    recall, texts = [], []
    for fact in facts:
        trained = world.prompts_for(fact, "train", "statement")
        heldout = world.prompts_for(fact, "heldout", "statement")
        if not trained or not heldout:
            continue
        recall.append((trained[0].prompt, trained[0].answer))
        texts.append(f"{heldout[0].prompt} {heldout[0].answer}")
        if len(recall) == n:
            break
    return GeneralSet(tuple(recall), tuple(texts))


def load_general_set(facts_file: str | Path | None, text_file: str | Path | None) -> GeneralSet:
    """A general set from files: JSONL {prompt, answer} facts and one text per line."""
    facts: list[tuple[str, str]] = []
    if facts_file is not None:
        for number, line in enumerate(Path(facts_file).read_text().splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    facts.append((str(row["prompt"]), str(row["answer"])))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise KelocateError(f"{facts_file} line {number} is not a {{prompt, answer}} JSON object; fix "
                                        "the file") from None
    texts = tuple(t for t in Path(text_file).read_text().splitlines() if t.strip()) if text_file is not None else ()
    return GeneralSet(tuple(facts), texts)


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


def general_ability(model, general: GeneralSet) -> dict[str, float]:
    """Recall of the facts (mean token accuracy) and perplexity of the texts, on the model as it is now."""
    out: dict[str, float] = {}
    if general.facts:
        scores = score_targets(model, [p for p, _ in general.facts], [a for _, a in general.facts])
        out["general_recall"] = sum(s.accuracy for s in scores) / len(scores)
    if general.texts:
        out["general_perplexity"] = perplexity(model, general.texts)
    return out
