"""Specificity of knowledge neurons: do they move only their fact, or every fact of its relation?

The random-neuron control (`intervene.random_control`) shows that the found neurons matter for the fact
more than as many random ones; it cannot show that they are the *fact's*. On SmolLM2 the neurons found
for "The capital of Germany is" -> Berlin also suppress Paris, Tokyo and Athens after their own "capital
of" prompts: they are relation neurons. This control scales the same neurons on control facts in groups
(other facts of the same relation, unrelated facts) and compares p(answer) before and after, per fact.

Control facts are plain (prompt, answer) pairs: the caller (the CLI) reads them from the organism's world
or a fact file. The scaling hooks are removed on exit; no weight changes.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kelocate.locate.neurons.find import MIN_KNOWN_P, is_known
from kelocate.locate.neurons.intervene import Neuron, logodds, prompt_position, scale_neurons
from kelocate.model.scoring import score_targets

PromptAnswer = tuple[str, str]  # (prompt, answer)

SAME_RELATION = "same_relation"
UNRELATED = "unrelated"

# a control group moving at least this share of the fact's own change says "not specific"
SHARE = 0.5


@dataclass
class FactChange:
    """p(answer | prompt) of one control fact before and with the neurons scaled."""

    prompt: str
    answer: str
    before: float
    after: float

    @property
    def relative_change(self) -> float:
        """(after - before) / before; 0 when before is 0 (as `Intervention.mean_change`)."""
        return (self.after - self.before) / self.before if self.before > 0 else 0.0

    @property
    def logodds_change(self) -> float:
        return logodds(self.after) - logodds(self.before)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "answer": self.answer, "before": self.before, "after": self.after,
                "relative_change": self.relative_change, "logodds_change": self.logodds_change}


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


@dataclass
class GroupChange:
    """The control facts of one group (e.g. same relation) and their mean changes."""

    name: str
    rows: list[FactChange]

    @property
    def mean_before(self) -> float | None:
        return _mean([r.before for r in self.rows])

    @property
    def mean_after(self) -> float | None:
        return _mean([r.after for r in self.rows])

    @property
    def mean_relative_change(self) -> float | None:
        return _mean([r.relative_change for r in self.rows])

    @property
    def mean_logodds_change(self) -> float | None:
        return _mean([r.logodds_change for r in self.rows])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n": len(self.rows), "mean_before": self.mean_before,
                "mean_after": self.mean_after, "mean_relative_change": self.mean_relative_change,
                "mean_logodds_change": self.mean_logodds_change, "facts": [r.to_dict() for r in self.rows]}


@dataclass
class Specificity:
    """Control facts per group under the same intervention as the fact, and what that shows."""

    factor: float
    neurons: list[Neuron]
    all_positions: bool
    groups: dict[str, GroupChange]
    target_change: float | None = None  # the fact's own relative change (its main prompt)
    relation: str | None = None  # the relation's name, for the verdict
    sources: dict[str, str] = field(default_factory=dict)  # group -> where its facts came from

    def share(self, group: str) -> float | None:
        """A group's mean relative change as a fraction of the fact's own (None: not measured)."""
        g = self.groups.get(group)
        change = g.mean_relative_change if g is not None else None
        if change is None or not self.target_change:
            return None
        return change / self.target_change

    @property
    def verdict(self) -> str:
        """One line: relation neurons, unspecific neurons, or specific to this fact."""
        if not self.target_change:
            return "the neurons do not move the fact itself, so their specificity cannot be judged"
        rel = f"'{self.relation}'" if self.relation else "same-relation"
        same, other = self.share(SAME_RELATION), self.share(UNRELATED)
        if other is not None and other >= SHARE:
            return (f"these neurons also move unrelated facts ({self._change(UNRELATED)} vs "
                    f"{self.target_change:+.1%} for the prompt itself): not specific to the fact or its relation")
        if same is not None and same >= SHARE:
            return (f"these neurons also move other {rel} facts ({self._change(SAME_RELATION)} vs "
                    f"{self.target_change:+.1%} for the prompt itself): relation neurons, not fact neurons")
        if same is not None:
            return (f"specific to this fact: other {rel} facts move {self._change(SAME_RELATION)} vs "
                    f"{self.target_change:+.1%} for the prompt itself")
        return "no same-relation facts measured: specificity to the fact is not shown"

    def _change(self, group: str) -> str:
        return f"{self.groups[group].mean_relative_change:+.1%}"

    def to_dict(self) -> dict[str, Any]:
        return {"factor": self.factor, "neurons": [list(n) for n in self.neurons],
                "positions": "all" if self.all_positions else "last prompt", "relation": self.relation,
                "target_relative_change": self.target_change, "share_rule": SHARE,
                "groups": {k: g.to_dict() for k, g in self.groups.items()}, "sources": self.sources,
                "verdict": self.verdict}


def probs(model, facts: Sequence[PromptAnswer]) -> list[float]:
    """p(answer | prompt) of each fact, in one batched scoring pass."""
    if not facts:
        return []
    return [s.prob for s in score_targets(model, [q for q, _ in facts], [a for _, a in facts])]


def scaled_probs(model, neurons: Sequence[Neuron], facts: Sequence[PromptAnswer], factor: float,
                 all_positions: bool = False) -> list[float]:
    """p(answer | prompt) of each fact with the neurons scaled by `factor`, batched per prompt length.

    The scorer pads on the right, so prompts of one token length share their last position: one hook at
    that position serves all of them (as `intervene` scales each prompt's last position).
    """
    groups: dict[int | None, list[int]] = defaultdict(list)
    for i, (prompt, _) in enumerate(facts):
        groups[None if all_positions else prompt_position(model, prompt)].append(i)
    out = [0.0] * len(facts)
    for position, idx in groups.items():
        with scale_neurons(model, neurons, factor, position):
            for i, p in zip(idx, probs(model, [facts[i] for i in idx]), strict=True):
                out[i] = p
    return out


def measure_group(model, name: str, neurons: Sequence[Neuron], facts: Sequence[PromptAnswer], factor: float,
                  all_positions: bool = False) -> GroupChange:
    """One group's p(answer) before and with the neurons scaled, per fact."""
    before = probs(model, facts)
    after = scaled_probs(model, neurons, facts, factor, all_positions)
    rows = [FactChange(q, a, b, x) for (q, a), b, x in zip(facts, before, after, strict=True)]
    return GroupChange(name, rows)


def specificity_control(model, neurons: Sequence[Neuron], groups: Mapping[str, Sequence[PromptAnswer]], factor: float,
                        all_positions: bool = False, target_change: float | None = None,
                        relation: str | None = None, sources: Mapping[str, str] | None = None) -> Specificity:
    """Scale `neurons` by `factor` (0: suppress, 2: enhance) on each group's control facts.

    `groups` maps a name (`SAME_RELATION`, `UNRELATED`, ...) to (prompt, answer) pairs; `target_change` is
    the fact's own relative change, which the verdict compares each group with.
    """
    measured = {name: measure_group(model, name, neurons, list(facts), factor, all_positions)
                for name, facts in groups.items()}
    return Specificity(factor, list(neurons), all_positions, measured, target_change, relation,
                       dict(sources or {}))


def pick_known(model, candidates: Sequence[PromptAnswer], n: int = 5, seed: int = 0,
               min_p: float = MIN_KNOWN_P) -> list[PromptAnswer]:
    """Up to `n` candidates the model knows (greedy answer, p >= min_p), taken in a seeded random order.

    Unknown facts would make a poor control (a relative change of a tiny p is noise). Candidates are scored
    a batch of 4n at a time, so a large fact file costs only what it takes to find n known facts.
    """
    order = list(dict.fromkeys(candidates))  # duplicates out, order kept
    random.Random(seed).shuffle(order)
    picked: list[PromptAnswer] = []
    chunk = max(4 * n, 1)
    for lo in range(0, len(order), chunk):
        batch = order[lo:lo + chunk]
        scores = score_targets(model, [q for q, _ in batch], [a for _, a in batch])
        picked += [f for f, s in zip(batch, scores, strict=True) if is_known(s, min_p)]
        if len(picked) >= n:
            break
    return picked[:n]
