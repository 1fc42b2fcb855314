"""Everything that makes study data out of the organism's world, in one place.

The organism knows its ground truth, so the studies, benchmarks and commands take their data from its
world instead of files: the facts causal tracing averages over (`organism_facts`), control facts for the
knowledge-neuron specificity check (`organism_candidates`), counterfactual edits with the prompts they are
judged on (`organism_cases`, `unrelated_facts`, `organism_probes`; `knowedit_case` hands one to the study's
metrics), training edits for MEND and SERAC (`organism_training_edits`; `organism_training_edits_for` is
what `kelocate train` and the study use), general-ability sets (`organism_general_set`), and the organism's
KnowEdit and KLoB exports, written once into kelocate's cache (`organism_knowedit_dir`, `organism_split_file`,
`organism_klob_dir`). Every draw is seeded: the same world and seed give the same data.

Files in the public formats are read by `kelocate.data`; `load_trace_facts` picks between the organism's
facts and a file's.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kelocate.data.facts import Fact, file_facts, same_answer
from kelocate.data.general import GeneralSet
from kelocate.data.knowedit import EditCase, Probe
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError
from kelocate.model.scoring import score_targets
from kelocate.organism import world_file
from kelocate.organism.world import World, load_world

PromptAnswer = tuple[str, str]


def organism_world(model, otherwise: str) -> World:
    """The world beside an organism checkpoint; a model that is not the organism is one line of error
    ending in `otherwise` (what to pass instead)."""
    path = world_file(model.path)
    if path is None:
        raise KelocateError(f"model {model.name!r} is not the organism (no world.json beside it), so {otherwise}")
    return load_world(path)


# ---------------------------------------------------------------------- facts to trace
def organism_facts(model) -> list[Fact]:
    """The organism's known facts on its training templates."""
    world = organism_world(model, "it has no known facts to trace; pass --dataset FILE")
    return [Fact(f.prompt, f.subject, f.answer, f"organism:{f.relation}", f.relation)
            for f in world.fact_prompts(split="known", templates="train")]


def load_trace_facts(model, dataset: str, limit: int | None = None, seed: int = 0
                     ) -> tuple[list[Fact], str, list[dict[str, str]]]:
    """(facts, source name, records skipped while loading) for 'organism' or a fact file
    (`kelocate.data.facts.file_facts`). With `limit`, a seeded random subset of that size."""
    facts, skipped = (organism_facts(model), []) if dataset == "organism" else file_facts(dataset)
    if limit is not None and limit < len(facts):
        facts = random.Random(seed).sample(facts, limit)
    return facts, "organism known facts" if dataset == "organism" else Path(dataset).name, skipped


# ---------------------------------------------------------------------- control facts
def organism_candidates(model, prompt: str, answer: str
                        ) -> tuple[str, list[PromptAnswer], list[PromptAnswer]] | None:
    """(relation label, same relation, unrelated) candidates from the organism's world; None: no world,
    or no fact of it has this prompt.

    Same relation: other known facts with the prompt's template (and another answer); unrelated: known
    facts of other relations and other subjects, on their relation's first template.
    """
    path = world_file(model.path)
    if path is None:
        return None
    world = load_world(path)
    matches = [fp for fp in world.fact_prompts(split="all", templates="all") if fp.prompt == prompt.strip()]
    if not matches:
        return None
    mine = next((fp for fp in matches if same_answer(fp.answer, answer)), matches[0])
    known = [fp for fp in world.fact_prompts(split="known", templates="all") if fp.alias_of is None
             and fp.subject != mine.subject and not same_answer(fp.answer, answer)]
    same = [(fp.prompt, fp.answer) for fp in known if fp.relation == mine.relation and fp.template == mine.template]
    first = {r.id: r.templates[0] for r in world.relations.values() if r.templates}
    other = [(fp.prompt, fp.answer) for fp in known
             if fp.relation != mine.relation and fp.template == first.get(fp.relation)]
    return world.relations[mine.relation].label, same, other


# ---------------------------------------------------------------------- counterfactual edits
@dataclass(frozen=True)
class OrganismEdit:
    """A counterfactual edit of one of the organism's facts, with the prompts it is judged on."""

    request: EditRequest
    relation: str = ""
    paraphrases: tuple[str, ...] = ()  # other prompts of the edited fact (should give the new target)
    neighbours: tuple[PromptAnswer, ...] = ()  # the same subject's other facts (should not change)
    notes: dict = field(default_factory=dict)


def organism_cases(model, world: World, n: int = 100, seed: int = 0, known_only: bool = True) -> list[OrganismEdit]:
    """n counterfactual edits of known single-answer facts the model recalls on their first template.

    The target is another entity of the relation's range (seeded); paraphrases are the fact's other
    statement templates; neighbours are the subject's other facts (first template each)."""
    rng = random.Random(seed)
    facts = [f for f in world.facts("known") if not world.relations[f.relation].one_to_many]
    rng.shuffle(facts)
    out: list[OrganismEdit] = []
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
        out.append(OrganismEdit(request, fact.relation, request.paraphrases, tuple(neighbours)))
        if len(out) == n:
            break
    return out


def exactly_n_cases(model, world: World, n: int, seed: int = 0) -> list[OrganismEdit]:
    """`organism_cases` for a study that needs all `n`: one line of error naming the most it can have."""
    cases = organism_cases(model, world, n, seed=seed)
    if len(cases) < n:
        raise KelocateError(f"the model recalls only {len(cases)} single-answer facts; ask for --facts {len(cases)}")
    return cases


def knowedit_case(edit: OrganismEdit, unrelated: Sequence[PromptAnswer] = (), neighbours: bool = True) -> EditCase:
    """An organism edit as a KnowEdit case, so that the study's metrics (`kelocate.studies.knowedit.metrics`)
    score it: its paraphrases are 'Paraphrase' portability probes (answer: the new target), the subject's other
    facts (with `neighbours`) 'Subject' and the `unrelated` facts 'Unrelated' locality probes."""
    request = edit.request
    portability = {"Paraphrase": tuple(Probe(p, (request.target_new,)) for p in edit.paraphrases)} \
        if edit.paraphrases else {}
    locality = {}
    if neighbours and edit.neighbours:
        locality["Subject"] = tuple(Probe(p, (a,)) for p, a in edit.neighbours)
    if unrelated:
        locality["Unrelated"] = tuple(Probe(p, (a,)) for p, a in unrelated)
    truth = request.ground_truth
    return EditCase("organism", request.subject, request.prompt, request.target_new, truth,
                    (truth,) if truth else (), None, portability, locality, {"relation": edit.relation})


def unrelated_facts(model, world: World, cases: Sequence[OrganismEdit], n: int = 100, seed: int = 1
                    ) -> list[PromptAnswer]:
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


def organism_probes(world: World, prompt: str, subject: str) -> dict[str, list[PromptAnswer]]:
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


def organism_training_edits(model, world: World, n: int = 400, seed: int = 123, held_out: int = 100,
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


def organism_training_edits_for(model, otherwise: str, n: int = 400, draws: int = 1):
    """What `kelocate train` and the KnowEdit study train MEND / SERAC on by default: `organism_training_edits`
    of the world beside the organism checkpoint, `draws` new targets per fact (the method's
    `registry.Method.training_draws`). A model that is not the organism is one line of error ending in
    `otherwise` (what to pass instead)."""
    return organism_training_edits(model, organism_world(model, otherwise), n, draws=draws)


# ---------------------------------------------------------------------- general ability
def organism_general_set(model, world: World, exclude_subjects: Iterable[str], n: int = 100,
                         seed: int = 0) -> GeneralSet:
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


# ---------------------------------------------------------------------- exports in the public formats
EXPORT_FORMAT = 1  # bump when an export's layout changes: old cache entries then miss


def organism_export_dir(model, kind: str, otherwise: str) -> tuple[Path, Path, dict]:
    """The organism's world file, the cache folder of its `kind` export and that entry's key.

    The entry is named and checked by kelocate's one keying scheme (`atomic.keyed_path`): the key holds the
    export kind and the world file's size and modification time, so a rebuilt organism is re-exported. A
    model that is not the organism is one line of error ending in `otherwise`.
    """
    from kelocate.atomic import keyed_path

    world = world_file(model.path)
    if world is None:
        raise KelocateError(f"model {model.name!r} is not the organism (no world.json beside it), so there "
                            f"{otherwise}")
    stat = world.stat()
    key = {"format": EXPORT_FORMAT, "kind": kind, "world_size": stat.st_size, "world_mtime_ns": stat.st_mtime_ns}
    return world, keyed_path(kind, key, label="organism"), key


def _cached_export(model, kind: str, otherwise: str, write: Callable[[Path, Path], object]) -> Path:
    """The `kind` export of the organism in the cache, written once: `write(world_file, folder)` fills a new
    folder, the entry's key goes in last (`KEY_FILE`), and the folder appears whole (an incomplete or foreign
    entry is replaced; one a racing process finished meanwhile is kept)."""
    from kelocate.atomic import CACHE_FIX, KEY_FILE, atomic_dir, key_text, same_key

    world, dest, key = organism_export_dir(model, kind, otherwise)
    stored = dest / KEY_FILE
    if stored.is_file() and same_key(stored.read_text(encoding="utf-8"), key):
        return dest
    with atomic_dir(dest, replace=dest.exists(), fix=CACHE_FIX) as tmp:
        write(world, tmp)
        (tmp / KEY_FILE).write_text(key_text(key), encoding="utf-8")
    return dest


def organism_klob_dir(model) -> Path:
    """The organism's KLoB export (KLoB-c/-r/-u.jsonl), written once into kelocate's cache folder."""
    from kelocate.organism.export import export_klob

    return _cached_export(model, "klob", "is no default KLoB data; pass --data DIR holding KLoB-c.jsonl and "
                                         "KLoB-r.jsonl", export_klob)


def organism_knowedit_dir(model) -> Path:
    """The organism's KnowEdit export, written once into kelocate's cache (keyed on its world file)."""
    from kelocate.organism.export import export

    return _cached_export(model, "knowedit", "are no built-in KnowEdit files; set data and files in the study "
                                             "config", lambda world, folder: export(load_world(world), folder))


def organism_split_file(model, task: str, split: str) -> str:
    """The organism export's file of one task and split."""
    folder = organism_knowedit_dir(model)
    entry = json.loads((folder / "manifest.json").read_text())["files"].get(f"{task}/{split}")
    if entry is None:
        raise KelocateError(f"the organism export has no {task} {split} split; use split = \"test\" or \"train\"")
    return str(folder / entry["path"])
