"""What the recovery study measures on a model, and the prompts it measures on.

The probes come from the organism's world (`recovery_probes`), or from a fact file for any other model
(`file_recovery_probes`, where "known" means recalled by the unedited model): the edited facts (with their
original and new answers), every other known fact (in the world its first training statement, one prompt per
fact, so the whole world rather than a sample), the edited subjects' other facts, and prompts of unrelated facts
for the KL of next-token distributions. `Reference` holds what the unedited model does on them; `measure`
compares the model as it is now: recall (teacher-forced argmax of every answer token, `score_targets`), the share
of what the original recalled that is still recalled, the mean KL(original || now) of the next-token
distributions, and the relative Frobenius distance of every written weight from its original value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from kelocate.errors import KelocateError
from kelocate.model import weights
from kelocate.model.scoring import score_targets
from kelocate.organism.datasets import OrganismEdit, unrelated_facts
from kelocate.organism.world import World, WorldFact

PromptAnswer = tuple[str, str]
MAX_FILE_FACTS = 2000  # the other facts of a fact file scored per round (the first, in the file's seeded order)


@dataclass(frozen=True)
class Probes:
    """The prompts of a recovery study, each (prompt, answer) except `unrelated` (prompts only)."""

    edited: tuple[PromptAnswer, ...]  # the edited facts with their ORIGINAL answers
    targets: tuple[PromptAnswer, ...]  # the same prompts with the new answers (edit success)
    others: tuple[PromptAnswer, ...]  # every other known fact of the world
    neighbours: tuple[PromptAnswer, ...]  # the edited subjects' other known facts
    unrelated: tuple[str, ...]  # prompts of facts of other subjects, for the KL


def first_statement(world: World, fact: WorldFact) -> str | None:
    """The prompt of a fact on its relation's first training statement (None: the relation has none)."""
    prompts = world.prompts_for(fact, "train", "statement")
    return prompts[0].prompt if prompts else None


def recovery_probes(model, world: World, cases: Sequence[OrganismEdit], unrelated: int = 100,
                    seed: int = 1) -> Probes:
    """The probes of `cases` (counterfactual edits of known facts, `organism_cases`) in `world`."""
    if not cases:
        raise KelocateError("no facts to edit; ask for at least one fact")
    edited_keys = {(c.request.subject, c.relation) for c in cases}
    subjects = {c.request.subject for c in cases}
    edited_prompts = {c.request.prompt for c in cases}
    others: list[PromptAnswer] = []
    neighbours: list[PromptAnswer] = []
    for fact in world.facts("known"):
        if (fact.subject, fact.relation) in edited_keys:
            continue
        prompt = first_statement(world, fact)
        if prompt is None or prompt in edited_prompts:
            continue
        others.append((prompt, fact.object))
        if fact.subject in subjects:
            neighbours.append(others[-1])
    kl_prompts = tuple(p for p, _ in unrelated_facts(model, world, cases, unrelated, seed=seed)) if unrelated else ()
    return Probes(tuple((c.request.prompt, c.request.ground_truth or "") for c in cases),
                  tuple((c.request.prompt, c.request.target_new) for c in cases), tuple(others),
                  tuple(neighbours), kl_prompts)


def file_recovery_probes(model, cases: Sequence[OrganismEdit], pool: Sequence[OrganismEdit],
                         unrelated: int = 100) -> Probes:
    """The probes of `cases` drawn from a fact file (`pool`: every fact of the file): every other fact of the file
    the unedited model recalls, of the first `MAX_FILE_FACTS` (a file has no 'known' set, so recall decides), the
    edited subjects' other facts among them, and the prompts of the first `unrelated` other facts of other
    subjects for the KL."""
    if not cases:
        raise KelocateError("no facts to edit; ask for at least one fact")
    edited = {c.request.prompt for c in cases}
    subjects = {c.request.subject for c in cases}
    rest = [c for c in pool if c.request.prompt not in edited][:MAX_FILE_FACTS]
    pairs = [(c.request.prompt, c.request.ground_truth or "") for c in rest]
    known = recall_vector(model, pairs)
    others = tuple(p for p, k in zip(pairs, known, strict=True) if k)
    neighbours = tuple(p for c, p, k in zip(rest, pairs, known, strict=True) if k and c.request.subject in subjects)
    kl_prompts = tuple(c.request.prompt for c in rest if c.request.subject not in subjects)[:unrelated]
    return Probes(tuple((c.request.prompt, c.request.ground_truth or "") for c in cases),
                  tuple((c.request.prompt, c.request.target_new) for c in cases), others, neighbours, kl_prompts)


def recall_vector(model, pairs: Sequence[PromptAnswer], batch_size: int = 64) -> list[bool]:
    """Whether the model recalls each answer (every answer token the teacher-forced argmax)."""
    if not pairs:
        return []
    scores = score_targets(model, [p for p, _ in pairs], [a for _, a in pairs], batch_size)
    return [s.correct for s in scores]


@torch.no_grad()
def last_logprobs(model, prompts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Next-token log-probabilities after each prompt [n, vocab] (float64, on the CPU)."""
    rows = []
    for lo in range(0, len(prompts), batch_size):
        ids, mask = model.batch_ids(list(prompts[lo:lo + batch_size]))
        logits = model.logits(ids, mask)
        last = mask.sum(dim=1) - 1
        picked = logits[torch.arange(len(last), device=logits.device), last.to(logits.device)]
        rows.append(torch.log_softmax(picked.double(), dim=-1).cpu())
    return torch.cat(rows) if rows else torch.zeros(0, 0, dtype=torch.float64)


def mean_kl(reference: torch.Tensor, current: torch.Tensor) -> float:
    """Mean over prompts of KL(reference || current), both log-probabilities [n, vocab]; 0.0 for no prompts."""
    if reference.shape != current.shape:
        raise KelocateError(f"KL of {tuple(reference.shape)} against {tuple(current.shape)}: not the same prompts")
    if reference.numel() == 0:
        return 0.0
    kl = (reference.exp() * (reference - current)).sum(dim=-1)
    return float(kl.clamp_min(0.0).mean())


def weight_distance(model, originals: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """||W - W_0||_F / ||W_0||_F of every parameter in `originals` (name -> its original values)."""
    out = {}
    for name, original in originals.items():
        now = weights.parameter(model, name).detach().double()
        base = original.to(now.device).double()
        norm = float(torch.linalg.norm(base))
        out[name] = float(torch.linalg.norm(now - base)) / norm if norm else float(torch.linalg.norm(now - base))
    return out


def _share(values: Sequence[bool]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _retained(before: Sequence[bool], after: Sequence[bool]) -> float:
    kept = [a for b, a in zip(before, after, strict=True) if b]
    return _share(kept)


@dataclass(frozen=True)
class Reference:
    """What the unedited model does on the probes: recall of each fact and next-token log-probabilities."""

    edited: tuple[bool, ...]
    others: tuple[bool, ...]
    neighbours: tuple[bool, ...]
    logprobs: torch.Tensor

    def summary(self) -> dict[str, float]:
        """The unedited model's recall of each probe set (round 0 of every run)."""
        return {"edited_recall": _share(self.edited), "other_recall": _share(self.others),
                "neighbour_recall": _share(self.neighbours)}


def reference(model, probes: Probes) -> Reference:
    """The unedited model's `Reference` on `probes`."""
    return Reference(tuple(recall_vector(model, probes.edited)), tuple(recall_vector(model, probes.others)),
                     tuple(recall_vector(model, probes.neighbours)), last_logprobs(model, probes.unrelated))


def measure(model, probes: Probes, ref: Reference, originals: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """The model now against the unedited one: weight distance per written parameter (and their mean), recall of
    the edited facts' original answers, of every other known fact and of the edited subjects' other facts (with
    the share of what the original recalled that is still recalled), and the mean KL on the unrelated prompts."""
    distance = weight_distance(model, originals)
    edited = recall_vector(model, probes.edited)
    others = recall_vector(model, probes.others)
    neighbours = recall_vector(model, probes.neighbours)
    return {"distance": distance,
            "distance_mean": sum(distance.values()) / len(distance) if distance else 0.0,
            "edited_recall": _share(edited), "edited_retained": _retained(ref.edited, edited),
            "other_recall": _share(others), "other_retained": _retained(ref.others, others),
            "neighbour_recall": _share(neighbours), "neighbour_retained": _retained(ref.neighbours, neighbours),
            "kl": mean_kl(ref.logprobs, last_logprobs(model, probes.unrelated))}
