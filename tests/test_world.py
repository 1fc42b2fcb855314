"""The synthetic world: every kind of fact exists, splits are disjoint, the case study is there, seeded."""

from __future__ import annotations

import json

import pytest

from kelocate.errors import KelocateError
from kelocate.organism.corpus import training_texts
from kelocate.organism.generate import build_world
from kelocate.organism.world import World, WorldSize, load_world


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(0)


@pytest.fixture(scope="module")
def texts(world) -> set[str]:
    return set(training_texts(world))


def test_relations_and_templates(world):
    assert len(world.relations) >= 8
    for rel in world.relations.values():
        assert len(rel.templates) + len(rel.heldout) >= 3, rel.id
        assert rel.heldout and rel.questions and rel.heldout_questions, rel.id
        assert all("{s}" in t for t, _, _ in rel.all_templates())
        assert all(q.startswith("Question:") and q.endswith("Answer:") for q in rel.questions)
    assert any(r.one_to_many for r in world.relations.values())


def test_no_template_is_a_prefix_of_another(world):
    """Otherwise the shorter prompt has two trained continuations (the answer and the longer template)."""
    by_domain: dict[str, list[str]] = {}
    for rel in world.relations.values():
        by_domain.setdefault(rel.domain, []).extend(t for t, _, _ in rel.all_templates())
    by_domain["subject"] += [c.template for c in world.chains]
    for templates in by_domain.values():
        for a in templates:
            assert not any(b.startswith(a + " ") for b in templates), a


def test_case_study(world):
    smap = world.node_by_name("SMAP")
    assert world.object_names(smap, "created_in") == ["Japan"]
    assert world.object_names(smap, "type_of") == ["group"]
    assert world.object_names(world.node_by_name("Japan"), "language") == ["Japanese"]
    assert world.split_of(smap, "created_in") == world.split_of(smap, "type_of") == "known"
    prompts = {(p.prompt, p.answer) for p in world.fact_prompts("known", "train")}
    for fp in world.case_study():
        assert (fp.prompt, fp.answer) in prompts
    two_hop = {(t.prompt, t.answer) for t in world.two_hop_prompts()}
    assert ("The language of the country where SMAP was created is", "Japanese") in two_hop


def test_every_kind_of_fact_exists(world):
    subjects = [s for s in world.nodes("subject") if world.graph.nodes[s]["seen"]]
    # several unrelated known facts per subject (relation specificity)
    assert all(len({f.relation for f in world.other_facts(s, "created_in")}) >= 4 for s in subjects)
    assert sum(bool(world.aliases(s)) for s in subjects) >= 10  # subject aliasing
    members = world.facts("known", "has_member")  # one-to-many (forgetfulness)
    assert any(f.index >= 1 for f in members)
    assert world.two_hop_prompts("statement") and world.two_hop_prompts("question")
    assert {c.first for c in world.chains} >= {"created_in", "founded_by"}
    assert len(world.facts("new")) >= 100  # deliberately untrained facts for insertions
    assert any(not world.graph.nodes[s]["seen"] for s in world.nodes("subject"))
    bios = world.bios()
    assert bios and any(b.label for b in bios) and any(b.label is None for b in bios)
    opinions = world.opinions()
    assert {o.sentiment for o in opinions} == {"pos", "neg"}
    assert all(len(o.pos) >= 3 and len(o.neg) >= 3 for o in opinions)
    assert world.private_qa() and world.retain_qa() and world.unknown_qa()
    private = {q.subject for q in world.private_qa()}
    assert not private & {q.subject for q in world.unknown_qa()}


def test_names_are_unambiguous(world):
    names = world.entity_names()
    assert len(names) == len(set(names))
    made_up = [
        n for n in names if world.graph.nodes[world.node_by_name(n)]["kind"] in ("subject", "person", "city")
    ]
    assert all(len(n) >= 3 for n in made_up)
    for fp in world.fact_prompts("all", "all", aliases=True):
        assert fp.prompt.count(fp.subject) == 1, fp.prompt


def test_heldout_templates_disjoint_and_untrained(world, texts):
    train = {(p.prompt, p.answer) for p in world.fact_prompts("known", "train")}
    heldout = world.fact_prompts("known", "heldout")
    assert heldout and not train & {(p.prompt, p.answer) for p in heldout}
    assert all(p.heldout and not p.trained for p in heldout)
    assert {world.graph.nodes[world.node_by_name(p.subject)]["group"] for p in heldout} == {"eval"}
    joined = "\n".join(texts)
    for p in heldout[::25]:
        assert f"{p.prompt} {p.answer}" not in joined
    # every trained-template prompt really is in the training text
    for p in world.fact_prompts("known", "train")[::25]:
        assert f"{p.prompt} {p.answer}" in joined


def test_known_and_new_facts_disjoint(world, texts):
    known = {(f.subject_id, f.relation, f.object_id) for f in world.facts("known")}
    new = {(f.subject_id, f.relation, f.object_id) for f in world.facts("new")}
    assert known and new and not known & new
    known_pairs = {(f.subject_id, f.relation) for f in world.facts("known")}
    assert not known_pairs & {(f.subject_id, f.relation) for f in world.facts("new")}
    joined = "\n".join(texts)
    for p in world.fact_prompts("new", "all"):
        assert not p.trained
        assert f"{p.prompt} {p.answer}" not in joined


def test_fact_prompt_api(world):
    fp = world.fact_prompts("known", "train")[0]
    assert {"prompt", "subject", "answer", "relation", "template"} <= set(fp.__dataclass_fields__)
    with pytest.raises(AttributeError):
        fp.prompt = "x"  # frozen
    with pytest.raises(KelocateError):
        world.fact_prompts(split="sometimes")
    with pytest.raises(KelocateError):
        world.fact_prompts(templates="most")
    questions = world.fact_prompts("known", "train", kind="question")
    assert questions and all(p.prompt.startswith("Question:") for p in questions)


def test_deterministic_from_seed(tmp_path):
    a, b = build_world(3, WorldSize.mini()), build_world(3, WorldSize.mini())
    assert json.dumps(a.to_json()) == json.dumps(b.to_json())
    assert json.dumps(build_world(4, WorldSize.mini()).to_json()) != json.dumps(a.to_json())
    path = a.save(tmp_path / "world.json")
    again = load_world(path)
    assert again.fact_prompts("all", "all", aliases=True) == a.fact_prompts("all", "all", aliases=True)
    assert load_world(tmp_path).entity_names() == a.entity_names()


def test_load_world_errors(tmp_path):
    with pytest.raises(KelocateError, match="does not exist"):
        load_world(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(KelocateError, match="not valid JSON"):
        load_world(bad)
    bad.write_text('{"hello": 1}')
    with pytest.raises(KelocateError, match="not a kelocate world"):
        load_world(bad)
