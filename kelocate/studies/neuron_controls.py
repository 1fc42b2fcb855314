"""Control facts for the knowledge-neuron specificity check: given on the command line, read from a fact file
(`kelocate.data.facts.read_fact_file`), or picked from the organism's world
(`kelocate.organism.datasets.organism_candidates`); studies wire data to locators, `locate/` only sees
(prompt, answer) pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kelocate.data.facts import Fact, same_answer
from kelocate.errors import KelocateError
from kelocate.locate.neurons.specificity import PromptAnswer


@dataclass
class ControlFacts:
    """The control facts of the specificity control, where they came from, and what to tell the user."""

    same: list[PromptAnswer] = field(default_factory=list)
    unrelated: list[PromptAnswer] = field(default_factory=list)
    relation: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def file_relation(records: list[Fact], prompts: list[str], relation: str | None) -> str | None:
    """The traced fact's relation: --relation, else that of its record; several unnamed is an error."""
    mine = next((r for r in records if r.prompt in prompts), None)
    relation = relation or (mine.relation if mine else None)
    named = sorted({r.relation for r in records if r.relation})
    if relation is None and len(named) > 1:
        raise KelocateError(f"the --facts file holds several relations ({', '.join(named)}) and none is the "
                            "prompt's record; pass --relation NAME")
    if relation is not None and relation not in named:
        raise KelocateError(f"no fact of relation {relation!r} in the --facts file; it has: "
                            f"{', '.join(named) or 'no relations'}")
    return relation


def file_candidates(records: list[Fact], prompts: list[str], answer: str,
                    relation: str | None) -> tuple[list[PromptAnswer], list[PromptAnswer]]:
    """(same relation, unrelated) candidates of a fact file: every record when no relation is known.

    The traced fact's own prompts, its subject and facts with its answer are left out (a fact with the
    same answer would mix up answer neurons and relation neurons).
    """
    subject = next((r.subject for r in records if r.prompt in prompts and r.subject), None)
    usable = [r for r in records if r.prompt not in prompts and not same_answer(r.answer, answer)
              and (subject is None or r.subject != subject)]
    same = [(r.prompt, r.answer) for r in usable if relation is None or r.relation == relation]
    other = [(r.prompt, r.answer) for r in usable if relation is not None and r.relation
             and r.relation != relation]
    return same, other


def explicit_notes(model, facts: list[PromptAnswer], group: str) -> list[str]:
    """Notes for control facts given on the command line that the model does not know."""
    from kelocate.locate.neurons.find import is_known
    from kelocate.model.scoring import score_targets

    if not facts:
        return []
    scores = score_targets(model, [q for q, _ in facts], [a for _, a in facts])
    return [f"{group} control fact {q!r} => {a!r} is not known to the model (p = {s.prob:.3f}); its relative "
            "change is noisy" for (q, a), s in zip(facts, scores, strict=True) if not is_known(s)]


def choose_control_facts(model, prompts: list[str], answer: str, given_same: list[PromptAnswer],
                         given_unrelated: list[PromptAnswer], records: list[Fact] | None, facts_path: Path | None,
                         relation: str | None, n: int, seed: int) -> ControlFacts:
    """The control facts: given on the command line, else picked (known, seeded) from --facts or the world.

    `relation`: the traced fact's relation in `records` (see `file_relation`).
    """
    from kelocate.locate.neurons.specificity import SAME_RELATION, UNRELATED, pick_known
    from kelocate.organism.datasets import organism_candidates

    out = ControlFacts(relation=relation)
    found = None
    if records is not None:
        found = (*file_candidates(records, prompts, answer, relation), f"--facts {facts_path.name}")
    elif not given_same or not given_unrelated:
        picked = organism_candidates(model, prompts[0], answer)
        if picked is not None:
            out.relation = picked[0]
            found = (picked[1], picked[2], "the organism's world")
    for group, given, index in ((SAME_RELATION, given_same, 0), (UNRELATED, given_unrelated, 1)):
        if given:
            chosen, source = given, "command line"
            out.notes += explicit_notes(model, given, group.replace("_", " "))
        elif found is not None:
            chosen, source = pick_known(model, found[index], n, seed), f"{found[2]} (known facts, seed {seed})"
        else:
            continue
        setattr(out, "same" if index == 0 else "unrelated", chosen)
        out.sources[group] = source
    if found is None and not given_same:
        out.notes.append("no other facts of this relation are known here (the prompt is no fact of an organism "
                         "world); pass --control-prompt 'PROMPT=>ANSWER' or --facts FILE to check whether the "
                         "neurons are specific to the fact")
    elif not out.same:
        out.notes.append("no other known fact of this relation was found; specificity is not checked")
    return out


