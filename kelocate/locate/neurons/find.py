"""Knowledge neurons (Dai et al. 2022): coarse neurons per prompt, refined neurons across paraphrases.

- Attribution: integrated gradients of the target (p(answer), see `kelocate.locate.ig`) w.r.t. every
  MLP neuron (`mlp.hook_post`) at the prompt's last position, from a zero baseline, m = 20 steps.
- Coarse neurons of a prompt: score >= threshold x (the prompt's largest score), 0.2 by default; or
  score >= an absolute value; optionally only the top-k of those.
- Refined neurons of a fact: coarse neurons shared by at least a fraction p of its prompts. p starts at
  0.7 and moves in steps of 0.05 (never below `p_min`) until a handful (2..5 by default) remain; the rule
  kept in the result is exact: neuron kept <=> count >= p x n_prompts.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kelocate.atomic import write_text
from kelocate.errors import KelocateError
from kelocate.locate.neurons.ig import Attribution, integrated_gradients
from kelocate.model.scoring import TargetScore, score_ids, score_targets

Neuron = tuple[int, int]  # (layer, index)

# below this p(answer) a prompt is not taken as known, even where the answer is the top next token
MIN_KNOWN_P = 0.1


# ====================================================================== coarse neurons


def coarse_neurons(attr: Attribution, threshold: float = 0.2, absolute: float | None = None,
                   top_k: int | None = None) -> list[tuple[int, int, float]]:
    """(layer, index, score) of neurons passing the threshold, best first (at most top_k of them)."""
    if absolute is None and not 0.0 <= threshold <= 1.0:
        raise KelocateError(f"--threshold is a fraction of the largest score in [0, 1], got {threshold}")
    if top_k is not None and top_k < 1:
        raise KelocateError(f"--top-k must be at least 1, got {top_k}")
    scores = torch.nan_to_num(attr.scores, nan=-math.inf)
    best = float(scores.max())
    cut = absolute if absolute is not None else threshold * best
    if absolute is None and best <= 0:
        return []  # no neuron raises the target
    picked = (scores >= cut).nonzero().tolist()
    rows = sorted(((layer, idx, float(scores[layer, idx])) for layer, idx in picked), key=lambda r: -r[2])
    return rows[:top_k] if top_k is not None else rows


# ====================================================================== refined neurons


@dataclass
class Refined:
    """Neurons shared by at least a fraction p of the prompts (count >= p * n_prompts)."""

    neurons: list[Neuron]
    p: float
    n_prompts: int
    counts: dict[Neuron, int]

    def rule_holds(self) -> bool:
        """Check the claim: exactly the neurons with count >= p * n_prompts are kept."""
        need = self.p * self.n_prompts - 1e-9
        return set(self.neurons) == {n for n, c in self.counts.items() if c >= need}


def shared_neurons(sets: Sequence[set[Neuron]], p: float) -> list[Neuron]:
    """Neurons present in at least a fraction p of the sets, ordered by count then (layer, index)."""
    counts = Counter(n for s in sets for n in s)
    need = p * len(sets) - 1e-9
    return sorted((n for n, c in counts.items() if c >= need), key=lambda n: (-counts[n], n))


def refine(sets: Sequence[set[Neuron]], p: float = 0.7, adaptive: bool = True, min_neurons: int = 2,
           max_neurons: int = 5, step: float = 0.05, p_min: float = 0.5) -> Refined:
    """Refined neurons; with `adaptive`, move p by `step` until min_neurons..max_neurons remain.

    Raising p stops before the set would drop below min_neurons; lowering stops at p_min, or before a
    non-empty set would grow beyond max_neurons (the shares of a few prompts move in coarse jumps).
    """
    if not sets:
        raise KelocateError("refining needs the coarse neurons of at least one prompt")
    if not 0.0 < p <= 1.0:
        raise KelocateError(f"the sharing fraction p must be in (0, 1], got {p}")
    counts = dict(Counter(n for s in sets for n in s))
    chosen = shared_neurons(sets, p)
    if adaptive:
        while len(chosen) > max_neurons and p + step <= 1.0 + 1e-9:
            nxt = shared_neurons(sets, min(p + step, 1.0))
            if len(nxt) < min_neurons:
                break
            p, chosen = min(p + step, 1.0), nxt
        while len(chosen) < min_neurons and p - step >= p_min - 1e-9:
            nxt = shared_neurons(sets, p - step)
            if chosen and len(nxt) > max_neurons:
                break
            p, chosen = p - step, nxt
    return Refined(chosen, round(p, 6), len(sets), counts)


# ====================================================================== is the fact known?


def is_known(score: TargetScore, min_p: float = MIN_KNOWN_P) -> bool:
    """Greedy decoding gives the answer and p(answer) >= min_p."""
    return score.correct and score.prob >= min_p


def unknown_notes(model, prompts: Sequence[str], answer: str | Sequence[int], min_p: float = MIN_KNOWN_P) -> list[str]:
    """A note for each prompt whose answer (text, or token ids as they are) the model does not know:
    attributing an unknown fact finds neurons of whatever the model does predict there, which then dilute the
    refined neurons."""
    if isinstance(answer, str):
        scores = score_targets(model, prompts, [answer] * len(prompts))
    else:
        scores = score_ids(model.logits, [model.encode(q).ids.tolist() for q in prompts], [list(answer)] * len(prompts),
                           model.pad_id, device=model.device)
        answer = model.decode(list(answer))
    notes = []
    for i, (q, s) in enumerate(zip(prompts, scores, strict=True)):
        if is_known(s, min_p):
            continue
        top = model.decode([s.predicted[0]])
        why = (f"the top next token is {top!r}" if not s.hits[0] else
               f"below {min_p} although it is the top next token" if s.correct else
               f"greedy decoding continues it otherwise ({model.decode(list(s.predicted))!r})")
        what = "the prompt" if i == 0 else "paraphrase"
        notes.append(f"{what} {q!r} is not known to the model: p({answer}) = {s.prob:.3f}, {why}; its neurons "
                     "may not be the fact's")
    return notes


# ====================================================================== the whole method


@dataclass
class KnowledgeNeurons:
    """The result of `find_knowledge_neurons` (JSON-serialisable through `to_dict`)."""

    prompts: list[str]
    answer: str
    answer_tokens: list[int]
    target: str
    target_description: str
    steps: int
    threshold: float
    absolute: float | None
    top_k: int | None
    engine: str
    coarse: list[list[tuple[int, int, float]]]  # per prompt
    neurons: list[Neuron]  # the result: refined neurons (several prompts) or the first prompt's coarse
    refined_p: float | None = None
    refined_counts: dict[Neuron, int] = field(default_factory=dict)
    target_values: list[float] = field(default_factory=list)
    layer_scores: list[list[float]] = field(default_factory=list)  # per prompt: sum of positive scores
    seconds: float = 0.0
    intervention: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # e.g. why the fast engine was not used
    encoding: str = ""  # how prompts were tokenized (the tokenizer's default, and its prefix)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "knowledge-neurons (integrated gradients, Dai et al. 2022)",
                "prompts": self.prompts, "answer": self.answer, "answer_tokens": self.answer_tokens,
                "target": self.target, "target_description": self.target_description, "steps": self.steps,
                "threshold": self.threshold, "absolute": self.absolute, "top_k": self.top_k,
                "engine": self.engine, "seconds": self.seconds,
                "neurons": [list(n) for n in self.neurons],
                "refined_p": self.refined_p,
                "refined_counts": [[la, i, c] for (la, i), c in sorted(self.refined_counts.items())],
                "coarse": [[list(r) for r in rows] for rows in self.coarse],
                "target_values": self.target_values, "layer_scores": self.layer_scores,
                "intervention": self.intervention, "notes": self.notes, "encoding": self.encoding}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON (atomically: temp file + rename)."""
        return write_text(Path(path), json.dumps(self.to_dict(), indent=2))

    def score_of(self, neuron: Neuron) -> float | None:
        """A neuron's mean score over the prompts where it is a coarse neuron (None: none)."""
        found = [s for rows in self.coarse for layer, idx, s in rows if (layer, idx) == neuron]
        return sum(found) / len(found) if found else None


def _mean_scores(coarse: list[list[tuple[int, int, float]]]) -> dict[Neuron, float]:
    sums: dict[Neuron, list[float]] = {}
    for rows in coarse:
        for layer, idx, s in rows:
            sums.setdefault((layer, idx), []).append(s)
    return {n: sum(v) / len(v) for n, v in sums.items()}


def layer_profile(attr: Attribution) -> list[float]:
    """Per layer, the sum of the positive attribution scores (a layer-level view of the neurons)."""
    return torch.nan_to_num(attr.scores, nan=0.0).clamp(min=0).sum(-1).tolist()


def find_knowledge_neurons(model, prompt: str | Sequence[str], answer: str | Sequence[int] | None, steps: int = 20,
                           threshold: float = 0.2, absolute: float | None = None, top_k: int | None = None,
                           p: float = 0.7, adaptive: bool = True, min_neurons: int = 2, max_neurons: int = 5,
                           target: str = "prob", layers: Sequence[int] | None = None,
                           engine: str = "fast") -> KnowledgeNeurons:
    """Coarse neurons of each prompt and, for several prompts (paraphrases), the refined neurons. `answer`: its
    text, its token ids, or None (the first prompt's top next token, the same token for every paraphrase)."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise KelocateError("no prompt given")
    first = integrated_gradients(model, prompts[0], answer, steps, target, layers, engine)
    if answer is None:  # the first prompt's top token, as token ids, is every paraphrase's answer
        answer = list(first.problem.answer_ids)
    attrs = [first, *(integrated_gradients(model, q, answer, steps, target, layers, engine)
                      for q in prompts[1:])]
    coarse = [coarse_neurons(a, threshold, absolute, top_k) for a in attrs]
    refined = None
    if len(prompts) > 1:
        refined = refine([{(layer, idx) for layer, idx, _ in rows} for rows in coarse], p, adaptive,
                         min_neurons, max_neurons)
        mean = _mean_scores(coarse)
        neurons = sorted(refined.neurons, key=lambda n: (-refined.counts[n], -mean[n], n))
    else:
        neurons = [(layer, idx) for layer, idx, _ in coarse[0]]
    notes = list(dict.fromkeys(a.meta["note"] for a in attrs if "note" in a.meta))
    notes += unknown_notes(model, prompts, answer)
    return KnowledgeNeurons(
        prompts, first.problem.answer, list(first.problem.answer_ids), target, attrs[0].target_description, steps,
        threshold, absolute, top_k, attrs[0].engine, coarse, neurons,
        refined.p if refined else None, refined.counts if refined else {},
        [a.target_value for a in attrs], [layer_profile(a) for a in attrs], sum(a.seconds for a in attrs),
        notes=notes, encoding=model.encoding)
