"""The facts a study edits: N facts the model knows, drawn from the organism's world or from a fact file.

The analyses of edits (weights, locate-vs-edit) need facts the model recalls before the edit, each with a new
target and, where there are some, paraphrases. On the organism they come from its world (`exactly_n_cases`);
on any other model from a KnowEdit or CounterFact file the user passes (ROME's CounterFact records carry the
new target and paraphrase prompts): the file's cases are shuffled with the seed and kept while the model's
teacher-forced argmax gives the whole original answer, until N are found.
"""

from __future__ import annotations

import random
from pathlib import Path

from kelocate.errors import KelocateError
from kelocate.model.scoring import score_targets
from kelocate.organism.datasets import OrganismEdit, exactly_n_cases, organism_world

NO_SOURCE = ("has no facts to edit on this model: pass --facts-file FILE, a KnowEdit or CounterFact file of facts "
             "it knows (the organism takes them from its world)")


def file_facts(path: str | Path, seed: int = 0) -> list[OrganismEdit]:
    """Every case of the file at `path` with an original answer and a new target, as edits, in seeded order; a
    fact (subject, relation, answer) or a prompt met again is left out."""
    from kelocate.studies.knowedit.plan import load_cases
    from kelocate.studies.knowedit.unit import request_of

    cases = [c for c in load_cases(str(path), "auto") if c.ground_truth and c.target_new]
    random.Random(seed).shuffle(cases)
    out, seen = [], set()
    for case in cases:
        request = request_of(case)
        relation = str(case.extra.get("relation_id") or case.task)
        fact = (request.subject, relation, request.ground_truth)
        if fact in seen or request.prompt in seen:  # one edit per fact and per prompt (a graph edge each)
            continue
        seen.update((fact, request.prompt))
        out.append(OrganismEdit(request, relation, case.paraphrase_prompts))  # judged on them, not fitted to
    return out


def file_cases(model, path: str | Path, n: int, seed: int = 0) -> list[OrganismEdit]:
    """N cases of the file at `path` whose original answer the model recalls (seeded order); one line of error
    when the file holds fewer."""
    cases = file_facts(path, seed)
    out: list[OrganismEdit] = []
    for case in cases:
        if score_targets(model, [case.request.prompt], [case.request.ground_truth])[0].correct:
            out.append(case)
            if len(out) == n:
                return out
    raise KelocateError(f"{model.name} recalls the original answer of only {len(out)} of the {len(cases)} facts "
                        f"in {path}; ask for --facts {len(out)} or pass a file of facts it knows")


def known_cases(model, n: int, seed: int = 0, path: str | Path | None = None, study: str = "the study"
                ) -> list[OrganismEdit]:
    """N known facts: from the file at `path` when given, else from the organism's world."""
    if path is not None:
        return file_cases(model, path, n, seed)
    return exactly_n_cases(model, organism_world(model, f"{study} {NO_SOURCE}"), n, seed=seed)
