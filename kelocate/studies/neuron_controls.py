"""Control facts for the knowledge-neuron specificity check: given on the command line, read from a fact file,
or picked from the organism's world (studies wire data to locators; `locate/` only sees (prompt, answer))."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kelocate.data.facts import read_records
from kelocate.errors import KelocateError

Fact = tuple[str, str]  # (prompt, answer)


@dataclass
class FactRecord:
    """One record of a --facts file."""

    prompt: str
    answer: str
    subject: str | None = None
    relation: str | None = None


@dataclass
class ControlFacts:
    """The control facts of the specificity control, where they came from, and what to tell the user."""

    same: list[Fact] = field(default_factory=list)
    unrelated: list[Fact] = field(default_factory=list)
    relation: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _record(item: object, where: str) -> FactRecord:
    if not isinstance(item, dict):
        raise KelocateError(f"{where}: a fact is an object with prompt, answer, subject, relation")
    values = {}
    for key in ("prompt", "answer", "subject", "relation"):
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            raise KelocateError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
        values[key] = value.strip() if value else None
    for key in ("prompt", "answer"):
        if not values[key]:
            raise KelocateError(f"{where}: the fact has no {key!r}")
    return FactRecord(**values)


def read_fact_file(path: Path) -> list[FactRecord]:
    """Records {prompt, subject, answer, relation?} of a JSON list or a JSON-lines file."""
    if not path.is_file():
        raise KelocateError(f"--facts {str(path)!r} does not exist; pass a .json list or .jsonl of "
                            "{prompt, subject, answer, relation} records")
    return [_record(item, where) for where, item in read_records(path)]


# ====================================================================== choosing control facts


def _same_answer(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def file_relation(records: list[FactRecord], prompts: list[str], relation: str | None) -> str | None:
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


def file_candidates(records: list[FactRecord], prompts: list[str], answer: str,
                    relation: str | None) -> tuple[list[Fact], list[Fact]]:
    """(same relation, unrelated) candidates of a fact file: every record when no relation is known.

    The traced fact's own prompts, its subject and facts with its answer are left out (a fact with the
    same answer would mix up answer neurons and relation neurons).
    """
    subject = next((r.subject for r in records if r.prompt in prompts and r.subject), None)
    usable = [r for r in records if r.prompt not in prompts and not _same_answer(r.answer, answer)
              and (subject is None or r.subject != subject)]
    same = [(r.prompt, r.answer) for r in usable if relation is None or r.relation == relation]
    other = [(r.prompt, r.answer) for r in usable if relation is not None and r.relation
             and r.relation != relation]
    return same, other


def organism_candidates(model, prompt: str, answer: str) -> tuple[str, list[Fact], list[Fact]] | None:
    """(relation label, same relation, unrelated) candidates from the organism's world; None: no world,
    or no fact of it has this prompt.

    Same relation: other known facts with the prompt's template (and another answer); unrelated: known
    facts of other relations and other subjects, on their relation's first template.
    """
    from kelocate.organism import world_file
    from kelocate.organism.world import load_world

    path = world_file(model.path)
    if path is None:
        return None
    world = load_world(path)
    matches = [fp for fp in world.fact_prompts(split="all", templates="all") if fp.prompt == prompt.strip()]
    if not matches:
        return None
    mine = next((fp for fp in matches if _same_answer(fp.answer, answer)), matches[0])
    known = [fp for fp in world.fact_prompts(split="known", templates="all") if fp.alias_of is None
             and fp.subject != mine.subject and not _same_answer(fp.answer, answer)]
    same = [(fp.prompt, fp.answer) for fp in known if fp.relation == mine.relation and fp.template == mine.template]
    first = {r.id: r.templates[0] for r in world.relations.values() if r.templates}
    other = [(fp.prompt, fp.answer) for fp in known
             if fp.relation != mine.relation and fp.template == first.get(fp.relation)]
    return world.relations[mine.relation].label, same, other


def explicit_notes(model, facts: list[Fact], group: str) -> list[str]:
    """Notes for control facts given on the command line that the model does not know."""
    from kelocate.locate.neurons.find import is_known
    from kelocate.model.scoring import score_targets

    if not facts:
        return []
    scores = score_targets(model, [q for q, _ in facts], [a for _, a in facts])
    return [f"{group} control fact {q!r} => {a!r} is not known to the model (p = {s.prob:.3f}); its relative "
            "change is noisy" for (q, a), s in zip(facts, scores, strict=True) if not is_known(s)]


def choose_control_facts(model, prompts: list[str], answer: str, given_same: list[Fact],
                         given_unrelated: list[Fact], records: list[FactRecord] | None, facts_path: Path | None,
                         relation: str | None, n: int, seed: int) -> ControlFacts:
    """The control facts: given on the command line, else picked (known, seeded) from --facts or the world.

    `relation`: the traced fact's relation in `records` (see `file_relation`).
    """
    from kelocate.locate.neurons.specificity import SAME_RELATION, UNRELATED, pick_known

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


