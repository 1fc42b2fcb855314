"""Facts to trace over a data set: the organism's known facts, KnowEdit files and KLoB-c files.

Loaders belong to the studies room; the averaging itself (`locate/causal_trace/average.py`) takes a list
of `TraceFact`s and never reads a file.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

from kelocate.errors import KelocateError
from kelocate.locate.causal_trace.average import TraceFact
from kelocate.organism import world_file
from kelocate.organism.world import load_world
from kelocate.probes.klob import load_klob_c
from kelocate.studies.knowedit import load_knowedit


def organism_facts(model) -> list[TraceFact]:
    """The organism's known facts on its training templates."""
    path = world_file(model.path)
    if path is None:
        raise KelocateError(f"model {model.name!r} is not the organism (no world.json beside it), so it has no "
                            "known facts to trace; pass --dataset FILE")
    world = load_world(path)
    return [
        TraceFact(f.prompt, f.subject, f.answer, f"organism:{f.relation}")
        for f in world.fact_prompts(split="known", templates="train")
    ]


def file_facts(path: str | Path) -> tuple[list[TraceFact], int]:
    """(facts, records skipped by the loader) of a KLoB-c (.jsonl) or KnowEdit (.json) file.

    A KnowEdit fact's answer is its ground truth when it has one (else the model's own top token).
    """
    p = Path(path)
    if not p.is_file():
        raise KelocateError(
            f"dataset {str(p)!r} does not exist; pass a KnowEdit .json, a KLoB-c .jsonl, or 'organism'"
        )
    if p.suffix == ".jsonl":
        return [
            TraceFact(prompt, f.subject, f.object, f.source) for f in load_klob_c(p) for prompt in f.prompts
        ], 0
    with warnings.catch_warnings():  # skipped records are counted and reported by the caller
        warnings.simplefilter("ignore")
        cases = load_knowedit(p)
    facts = [TraceFact(c.prompt, c.subject, c.ground_truth, f"{p.name}:{c.source[1]}") for c in cases]
    return facts, len(cases.skipped)


def load_trace_facts(
    model, dataset: str, limit: int | None = None, seed: int = 0
) -> tuple[list[TraceFact], str, int]:
    """(facts, source name, records skipped while loading) for 'organism' or a file.

    With `limit`, a seeded random subset of that size.
    """
    facts, skipped = (organism_facts(model), 0) if dataset == "organism" else file_facts(dataset)
    if limit is not None and limit < len(facts):
        facts = random.Random(seed).sample(facts, limit)
    return facts, "organism known facts" if dataset == "organism" else Path(dataset).name, skipped


