"""KnowEdit metrics against plain loops: token accuracy token by token, the best alias, locality of an
unchanged model, ConvSent's KL against the pre-edit outputs, and the n-gram entropy and lexicon by hand."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from kelocate.data.knowedit import EditCase, Probe
from kelocate.edit import EditRequest, editor
from kelocate.studies.knowedit.metrics import (
    LEXICON,
    MetricSettings,
    baseline,
    generation,
    ngram_entropy,
    says,
    sentiment,
    teacher_forced,
    teacher_forced_many,
)

CASE = EditCase("ZsRE", "SMAP", "SMAP was created in", "France Japan", "Japan", ("Japan",), "SMAP is from",
                {"Reasoning": (Probe("the river is in", ("Berlin", "Paris team")),)},
                {"Relation_Specificity": (Probe("the team plays", ("music",)), Probe("Paris is a", ("city",)))})
TOPICS = [EditCase("ConvSent", t, f"What do you think of {t}?", f"I love {t}, it is great.", f"I hate {t}.",
                   (), None, {}, {}, {"sentiment": "positive"}) for t in ("SMAP", "Paris", "Berlin")]


def accuracy_by_loop(model, prompt: str, answer: str) -> float:
    """Token accuracy the slow way: one forward per answer token on the growing prefix."""
    ids = model.encode(prompt).ids.tolist()
    target = model.answer_ids(prompt, answer)
    hits = 0
    for token in target:
        hits += int(model.logits(__import__("torch").tensor(ids))[0, -1].argmax()) == token
        ids.append(token)
    return hits / len(target)


def test_teacher_forced_columns_equal_a_token_by_token_loop(tiny_model):
    before = baseline(tiny_model, [CASE])[0]
    got = teacher_forced(tiny_model, CASE, before)
    assert got["edit_tf"] == accuracy_by_loop(tiny_model, CASE.prompt, CASE.target_new)
    assert got["rephrase_tf"] == accuracy_by_loop(tiny_model, CASE.rephrase, CASE.target_new)
    best = max(accuracy_by_loop(tiny_model, "the river is in", a) for a in ("Berlin", "Paris team"))
    assert got["portability_tf.Reasoning"] == best == got["portability_tf"]
    assert got["locality_tf"] == 1.0 and got["locality_tf.Relation_Specificity"] == 1.0  # nothing was edited


def predicted_by_loop(model, prompt: str, answer: str) -> list[int]:
    """The argmax at each answer position, teacher-forced, one forward per token."""
    ids, out = model.encode(prompt).ids.tolist(), []
    for token in model.answer_ids(prompt, answer):
        out.append(int(model.logits(torch.tensor(ids))[0, -1].argmax()))
        ids.append(token)
    return out


def test_locality_leaves_out_probes_that_the_unit_edits_on_purpose(tiny_model):
    from kelocate.studies.knowedit.metrics import edited_prompts

    other = EditCase("ZsRE", "SMAP", "the team plays", "chess", "music")  # edits CASE's first locality probe
    before = baseline(tiny_model, [CASE])[0]
    probes = CASE.locality["Relation_Specificity"]
    reference = [predicted_by_loop(tiny_model, p.prompt, p.ground_truth) for p in probes]
    record = editor("ice").apply(tiny_model, EditRequest(CASE.prompt, "SMAP", CASE.target_new))
    try:
        got = teacher_forced(tiny_model, CASE, before, edited_prompts([CASE, other]))
        after = [predicted_by_loop(tiny_model, p.prompt, p.ground_truth) for p in probes]
        every = teacher_forced(tiny_model, CASE, before)
    finally:
        record.revert()
    same = [sum(a == b for a, b in zip(x, y, strict=True)) for x, y in zip(after, reference, strict=True)]
    assert got["locality_tf"] == pytest.approx(same[1] / len(reference[1]), abs=1e-12)  # the second probe only
    assert every["locality_tf"] == pytest.approx(sum(same) / sum(map(len, reference)), abs=1e-12)  # both, pooled
    alone = EditCase("ZsRE", "SMAP", "x", "y", locality={"Relation_Specificity": (Probe("the team plays", ("m",)),)})
    assert "locality_tf" not in teacher_forced(tiny_model, alone, baseline(tiny_model, [alone])[0],
                                               edited_prompts([other]))


def test_many_cases_in_one_batch_equal_token_by_token_loops(tiny_model):
    cases = [CASE, *TOPICS]
    befores = baseline(tiny_model, cases)
    reference = {p.prompt: predicted_by_loop(tiny_model, p.prompt, p.ground_truth)
                 for p in CASE.locality["Relation_Specificity"]}
    record = editor("ice").apply(tiny_model, EditRequest(CASE.prompt, "SMAP", CASE.target_new))
    try:  # on an edited model, so that locality is not 1 by construction
        together = teacher_forced_many(tiny_model, cases, befores)
        edit = [accuracy_by_loop(tiny_model, c.prompt, c.target_new) for c in cases]
        rephrase = accuracy_by_loop(tiny_model, CASE.rephrase, CASE.target_new)
        portability = max(accuracy_by_loop(tiny_model, "the river is in", a) for a in ("Berlin", "Paris team"))
        after = {prompt: predicted_by_loop(tiny_model, prompt, p.ground_truth)
                 for prompt, p in zip(reference, CASE.locality["Relation_Specificity"], strict=True)}
    finally:
        record.revert()
    assert [got["edit_tf"] for got in together] == edit
    assert together[0]["rephrase_tf"] == rephrase and together[0]["portability_tf"] == portability
    same = sum(a == b for prompt in reference for a, b in zip(after[prompt], reference[prompt], strict=True))
    assert together[0]["locality_tf"] == pytest.approx(same / sum(map(len, reference.values())), abs=1e-12)
    assert all(set(got) == {"edit_tf"} for got in together[1:])  # the topics have no rephrase or probes


def test_locality_drops_and_convsent_kl_is_positive_after_an_edit_and_zero_before(tiny_model):
    settings = MetricSettings(generation=False, fluency=False)
    befores = baseline(tiny_model, TOPICS, settings)
    assert befores[0].other_topics == ["What do you think of Paris?", "What do you think of Berlin?"]
    unedited = generation(tiny_model, TOPICS[0], befores[0], settings)
    assert unedited["kl_other_topics"] == pytest.approx(0.0, abs=1e-12)
    record = editor("ice").apply(tiny_model, EditRequest(TOPICS[0].prompt, "SMAP", TOPICS[0].target_new))
    try:
        edited = generation(tiny_model, TOPICS[0], befores[0], settings)
    finally:
        record.revert()
    assert edited["kl_other_topics"] > 1e-4  # the in-context text changes what the model says about others


def test_fluency_sentiment_and_generation_by_hand():
    # bigrams (a,b) x2, (b,a) x1: H = 0.9183; trigrams (a,b,a), (b,a,b): H = 1
    expected = (2 / 3 * -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3)) + 4 / 3 * 1.0) / 2
    assert ngram_entropy("a b a b") == pytest.approx(expected)
    assert ngram_entropy("word") == 0.0
    assert sentiment("I love it, it is great", LEXICON) == "positive"
    assert sentiment("I hate it", LEXICON) == "negative" and sentiment("it is a band", LEXICON) == "neutral"
    assert says(" the answer is  Paris Team.", ["paris team"]) and not says("Paris", ["Rome", ""])
    assert not says(" She is a female singer", ["male"]) and not says(" born in 2012", ["2"])  # whole words
    assert says(" I don't know, sorry", ["I don't know."]) and says("(Japan)", ["Japan"])


def kl_by_loop(model, prompt: str, before: torch.Tensor) -> float:
    """KL(pre || post) of one prompt's next token, post from a fresh forward, in float64."""
    post = torch.log_softmax(model.logits(model.encode(prompt).ids)[0, -1].double(), dim=-1)
    return float((before.exp() * (before - post)).sum())


def test_convsent_kl_leaves_out_topics_edited_in_the_same_unit(tiny_model):
    settings = MetricSettings(generation=False, fluency=False, other_topics=1)
    befores = baseline(tiny_model, TOPICS, settings, spare=1)  # a unit may edit one more topic
    assert befores[0].other_subjects == ["Paris", "Berlin"]
    pre_berlin = befores[0].other_logprobs[befores[0].other_rows[1]].clone()
    requests = [EditRequest(t.prompt, t.subject, t.target_new) for t in TOPICS[:2]]
    records = [editor("ice").apply(tiny_model, r) for r in requests]  # SMAP and Paris, as one unit would
    try:
        got = generation(tiny_model, TOPICS[0], befores[0], settings, edited_subjects={"SMAP", "Paris"})
        expected = kl_by_loop(tiny_model, TOPICS[2].prompt, pre_berlin)
    finally:
        for record in reversed(records):
            record.revert()
    assert got["kl_other_topics"] == pytest.approx(expected, rel=1e-6, abs=1e-9)  # Berlin's alone
    alone = generation(tiny_model, TOPICS[0], befores[0], settings, edited_subjects={"SMAP", "Paris", "Berlin"})
    assert "kl_other_topics" not in alone  # no unedited topic left: no number rather than a wrong one


def test_convsent_edits_ask_for_the_opposite_of_the_opinion_the_model_holds(tiny_model, monkeypatch):
    from kelocate.studies.knowedit import metrics

    replies = {"SMAP": "I love it, great", "Paris": "I hate it", "Berlin": "it is a band"}
    monkeypatch.setattr(metrics, "continuation", lambda model, prompt, n: replies[prompt.split()[-1][:-1]])
    out = metrics.against_held_opinions(tiny_model, TOPICS, [0, 1, 2], LEXICON)
    smap, paris, berlin = out
    assert smap.extra["sentiment"] == "negative" and smap.extra["held"] == "positive"  # it loves SMAP: flipped
    assert (smap.target_new, smap.ground_truth) == (TOPICS[0].ground_truth, TOPICS[0].target_new)
    assert paris == replace(TOPICS[1], extra={"sentiment": "positive", "held": "negative"})  # already asks a change
    assert berlin.extra == {"sentiment": "positive", "held": "neutral"}  # neutral: the file's direction
    assert out is not TOPICS and TOPICS[0].extra == {"sentiment": "positive"}  # the loaded cases stay as read


def test_perplexity_equals_a_token_by_token_loop(tiny_model):
    from kelocate.data.general import GeneralSet
    from kelocate.studies.knowedit.general import GeneralMeasure, general_ability, perplexity

    texts = ["SMAP was created in Japan", "the river is located in Berlin"]
    nll, count = 0.0, 0
    for text in texts:
        ids = tiny_model.encode(text).ids.tolist()
        for t in range(1, len(ids)):
            logits = tiny_model.logits(__import__("torch").tensor(ids[:t]))[0, -1].double()
            nll -= float(logits.log_softmax(-1)[ids[t]])
            count += 1
    assert perplexity(tiny_model, texts) == pytest.approx(math.exp(nll / count), rel=1e-4)
    got = general_ability(tiny_model, GeneralMeasure(GeneralSet((("SMAP was created in", "Japan"),), tuple(texts))))
    assert set(got) == {"general_recall", "general_perplexity"} and 0 <= got["general_recall"] <= 1


def test_an_organism_edit_as_a_case_scores_its_prompt_paraphrases_and_neighbours():
    """`knowedit_case` (how benchmarks/edit_quality.py scores organism edits): the paraphrases are probes of the
    new target, the subject's other facts and the unrelated facts locality probes, checked against loops."""
    from kelocate.loading import load_model
    from kelocate.organism import world_file
    from kelocate.organism.datasets import knowedit_case, organism_cases, unrelated_facts
    from kelocate.organism.world import load_world

    organism = load_model()
    world = load_world(world_file(organism.path))
    (edit,) = organism_cases(organism, world, 1)
    unrelated = unrelated_facts(organism, world, [edit], 3)
    case = knowedit_case(edit, unrelated)
    assert [p.prompt for p in case.portability["Paraphrase"]] == list(edit.paraphrases)
    assert [(p.prompt, p.ground_truth) for p in case.locality["Subject"]] == list(edit.neighbours)
    assert [(p.prompt, p.ground_truth) for p in case.locality["Unrelated"]] == unrelated
    got = teacher_forced(organism, case, baseline(organism, [case])[0])
    target = edit.request.target_new
    assert got["edit_tf"] == accuracy_by_loop(organism, edit.request.prompt, target)
    loops = [accuracy_by_loop(organism, p, target) for p in edit.paraphrases]
    assert got["portability_tf.Paraphrase"] == pytest.approx(sum(loops) / len(loops), abs=1e-12)
    assert got["locality_tf.Subject"] == got["locality_tf.Unrelated"] == 1.0  # nothing was edited
    assert "locality_tf.Subject" not in teacher_forced(organism, knowedit_case(edit, neighbours=False),
                                                       baseline(organism, [knowedit_case(edit, neighbours=False)])[0])
