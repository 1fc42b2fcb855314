"""Counterfactual edits of the organism's known facts, and how an edit is scored (edit success,
paraphrase success, locality), for the editors' benchmark and the sequential-editing curves.

Scores are teacher-forced, through the floor's one batched scorer: success is the fraction of target
tokens that are the argmax (KnowEdit's token accuracy); locality is the fraction of answer tokens whose
argmax is unchanged from the unedited model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from kelocate.edit.request import EditRequest
from kelocate.model.scoring import score_targets


@dataclass(frozen=True)
class EditCase:
    """An edit request with the prompts it is judged on."""

    request: EditRequest
    relation: str = ""
    paraphrases: tuple[str, ...] = ()  # other prompts of the edited fact (should give the new target)
    neighbours: tuple[tuple[str, str], ...] = ()  # the same subject's other facts (should not change)
    notes: dict = field(default_factory=dict)


def organism_cases(model, world, n: int = 100, seed: int = 0, known_only: bool = True) -> list[EditCase]:
    """n counterfactual edits of known single-answer facts the model recalls on their first template.

    The target is another entity of the relation's range (seeded); paraphrases are the fact's other
    statement templates; neighbours are the subject's other facts (first template each)."""
    rng = random.Random(seed)
    facts = [f for f in world.facts("known") if not world.relations[f.relation].one_to_many]
    rng.shuffle(facts)
    out: list[EditCase] = []
    for fact in facts:
        prompts = world.prompts_for(fact, "all", "statement")
        if not prompts:
            continue
        first = prompts[0]
        if known_only and not score_targets(model, [first.prompt], [first.answer])[0].correct:
            continue
        choices = [c for c in world.candidates(fact.relation) if c != fact.object]
        target = rng.choice(choices)
        neighbours = []
        for other in world.other_facts(fact.subject_id, fact.relation):
            if world.relations[other.relation].one_to_many:
                continue
            other_prompts = world.prompts_for(other, "train", "statement")
            if other_prompts:
                neighbours.append((other_prompts[0].prompt, other_prompts[0].answer))
        request = EditRequest(first.prompt, first.subject, target, ground_truth=fact.object,
                              paraphrases=tuple(p.prompt for p in prompts[1:]))
        out.append(EditCase(request, fact.relation, request.paraphrases, tuple(neighbours)))
        if len(out) == n:
            break
    return out


def unrelated_facts(model, world, cases: Sequence[EditCase], n: int = 100, seed: int = 1) -> list[tuple[str, str]]:
    """n known facts (first template) of subjects no case edits."""
    edited = {c.request.subject for c in cases}
    rng = random.Random(seed)
    facts = [f for f in world.facts("known") if f.subject not in edited
             and not world.relations[f.relation].one_to_many]
    rng.shuffle(facts)
    out = []
    for fact in facts:
        prompts = world.prompts_for(fact, "train", "statement")
        if prompts:
            out.append((prompts[0].prompt, prompts[0].answer))
        if len(out) == n:
            break
    return out


def predictions(model, pairs: Sequence[tuple[str, str]]) -> list[tuple[int, ...]]:
    """The argmax token at each answer position (teacher-forced), per (prompt, answer)."""
    if not pairs:
        return []
    return [s.predicted for s in score_targets(model, [p for p, _ in pairs], [a for _, a in pairs])]


def locality(model, pairs: Sequence[tuple[str, str]], before: Sequence[tuple[int, ...]]) -> float:
    """Fraction of answer tokens whose argmax equals the unedited model's."""
    after = predictions(model, pairs)
    same = sum(sum(a == b for a, b in zip(x, y, strict=True)) for x, y in zip(after, before, strict=True))
    total = sum(len(x) for x in before)
    return same / total if total else float("nan")


def success(model, prompts: Sequence[str], target: str) -> float:
    """Mean token accuracy of `target` after each prompt (nan without prompts)."""
    if not prompts:
        return float("nan")
    scores = score_targets(model, list(prompts), [target] * len(prompts))
    return sum(s.accuracy for s in scores) / len(scores)


def score_case(model, case: EditCase, unrelated: Sequence[tuple[str, str]] = (),
               before: dict | None = None) -> dict[str, float]:
    """Edit success on the prompt and paraphrases, locality on neighbours and unrelated facts.

    `before` holds the unedited model's predictions ({'neighbours': [...], 'unrelated': [...]}) from
    `baseline`."""
    before = before or {}
    target = case.request.target_new
    out = {"edit_success": success(model, [case.request.prompt], target),
           "paraphrase_success": success(model, case.paraphrases, target)}
    if case.neighbours:
        out["locality_subject"] = locality(model, case.neighbours, before["neighbours"])
    if unrelated:
        out["locality_unrelated"] = locality(model, unrelated, before["unrelated"])
    return out


def baseline(model, case: EditCase, unrelated: Sequence[tuple[str, str]] = ()) -> dict:
    """The unedited model's predictions `score_case` compares with."""
    return {"neighbours": predictions(model, case.neighbours), "unrelated": predictions(model, unrelated)}


def organism_probes(world, prompt: str, subject: str) -> dict[str, list[tuple[str, str]]]:
    """For a prompt of one of the organism's facts: its paraphrases (with the old answer), the subject's
    other facts and a few facts of other subjects, each as (prompt, answer). Empty lists when the prompt is
    not one of the world's."""
    match = next((p for p in world.fact_prompts("all", "all") if p.prompt == prompt and p.subject == subject), None)
    if match is None:
        return {"paraphrase": [], "same subject": [], "other subjects": []}
    fact = next(f for f in world.facts("all") if f.subject == subject and f.relation == match.relation)
    paraphrases = [(p.prompt, p.answer) for p in world.prompts_for(fact, "all", "statement") if p.prompt != prompt]
    same = []
    for other in world.other_facts(fact.subject_id, fact.relation):
        other_prompts = world.prompts_for(other, "train", "statement")
        if other_prompts:
            same.append((other_prompts[0].prompt, other_prompts[0].answer))
    others = []
    for other in world.facts("known", match.relation):
        if other.subject != subject and len(others) < 2:
            first = world.prompts_for(other, "train", "statement")
            if first:
                others.append((first[0].prompt, first[0].answer))
    return {"paraphrase": paraphrases[:2], "same subject": same[:2], "other subjects": others}


def organism_training_edits(model, world, n: int = 400, seed: int = 123, held_out: int = 100,
                            unrelated_per_edit: int = 2, draws: int = 1):
    """Training edits for MEND/SERAC on the organism: counterfactual edits of known facts whose subjects are
    not among the first `held_out` evaluation cases (`organism_cases(seed=0)`), each with the subject's other
    facts (`neighbours`, answers included) and a few unrelated prompts for the locality losses. `draws` > 1
    repeats the selection with other seeds, so the same facts come back with other new targets (SERAC's
    counterfactual model then has to read the target from the edit instead of memorising it)."""
    if draws > 1:
        return [e for k in range(draws) for e in organism_training_edits(model, world, n, seed + k, held_out,
                                                                           unrelated_per_edit)]
    from kelocate.edit.training import TrainingEdit

    evaluation = {c.request.subject for c in organism_cases(model, world, held_out, seed=0)} if held_out else set()
    pool = [c for c in organism_cases(model, world, n + 4 * held_out, seed=seed, known_only=False)
            if c.request.subject not in evaluation][:n]
    others = unrelated_facts(model, world, pool, 10 * unrelated_per_edit + 50, seed=seed)
    rng = random.Random(seed)
    return [TrainingEdit(c.request, tuple(p for p, _ in rng.sample(others, unrelated_per_edit)), c.neighbours)
            for c in pool]
