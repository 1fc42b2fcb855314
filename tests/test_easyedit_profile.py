"""The `easyedit` metric profile, each definition against a plain re-implementation written from its
description (one prompt, one reply, one token at a time, through the plain HF model and its tokenizer), on
the organism before and after a real edit."""

from __future__ import annotations

import math
import unicodedata

import pytest
import torch

from kelocate.data.knowedit import EditCase, Probe
from kelocate.edit import EditRequest, editor
from kelocate.errors import KelocateError
from kelocate.loading import load_model
from kelocate.model import weights
from kelocate.model.twin import plain_twin
from kelocate.studies.knowedit import easyedit_metrics as ee


@pytest.fixture(scope="module")
def organism():
    torch.set_num_threads(1)
    return load_model(None)


@pytest.fixture(scope="module")
def world_case(organism):
    """A fact case of the organism with two portability kinds (first aliases not the best ones) and two
    locality keys, built from its world."""
    from kelocate.organism.datasets import organism_general_set, organism_world

    facts = organism_general_set(organism, organism_world(organism, "the test needs it"), (), n=8).facts
    (prompt, answer), others = facts[0], facts[1:]
    subject = prompt.split()[0]
    return EditCase("ZsRE", subject, prompt, others[0][1], answer,
                    portability={"One": (Probe(others[1][0], ("nonsense words", others[1][1])),),
                                 "Two": (Probe(others[2][0], (others[2][1],)), Probe(others[3][0], (others[3][1],)))},
                    locality={"A": (Probe(others[4][0], (others[4][1],)),),
                              "B": (Probe(others[5][0], (others[5][1],)), Probe(others[6][0], (others[6][1],)))},
                    source=("world", 0))


@torch.no_grad()
def plain_accuracy_tokens(model, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """The reference's teacher forcing, one row: tokens of `prompt + " " + target` with the tokenizer's
    defaults, the prompt's length from the prompt alone, the argmax one position before each target token."""
    tok = model.tokenizer
    ids = tok(prompt + " " + target)["input_ids"]
    k = len(tok(prompt)["input_ids"])
    logits = plain_twin(model)(torch.tensor([ids])).logits[0]
    return [int(logits[j - 1].argmax()) for j in range(k, len(ids))], ids[k:]


def share(a, b) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(b)


def test_edit_portability_and_locality_equal_the_plain_definitions_after_an_edit(organism, world_case):
    case = world_case
    before = ee.reference_baselines(organism, [case])[0]
    pre = {k: [plain_accuracy_tokens(organism, p.prompt, p.ground_truth)[0] for p in probes]
           for k, probes in case.locality.items()}
    original = weights.state_hash(organism)
    record = editor("rome").apply(organism, EditRequest(case.prompt, case.subject, case.target_new))
    try:
        got = ee.reference_scores(organism, case, before, fluency=False)
        assert got["ee.edit"] == pytest.approx(share(*plain_accuracy_tokens(organism, case.prompt, case.target_new)))
        kinds = {k: sum(share(*plain_accuracy_tokens(organism, p.prompt, p.answers[0])) for p in probes) / len(probes)
                 for k, probes in case.portability.items()}  # the FIRST alias, even where another scores better
        assert got["ee.portability.One"] == pytest.approx(kinds["One"]) == 0.0
        assert got["ee.portability"] == pytest.approx(sum(kinds.values()) / 2)
        keys = {k: sum(share(plain_accuracy_tokens(organism, p.prompt, p.ground_truth)[0], pre[k][n])
                       for n, p in enumerate(probes)) / len(probes) for k, probes in case.locality.items()}
        assert got["ee.locality"] == pytest.approx(sum(keys.values()) / len(keys))  # per key, then over keys
    finally:
        record.revert()
    assert weights.state_hash(organism) == original


def test_wikibio_locality_reads_relation_specificity_only(organism, world_case):
    from dataclasses import replace

    case = replace(world_case, task="WikiBio", portability={},
                   locality={"Relation_Specificity": world_case.locality["A"], "Other": world_case.locality["B"]})
    before = ee.reference_baselines(organism, [case])[0]
    assert set(before.locality) == {"Relation_Specificity"}
    assert ee.reference_scores(organism, case, before, fluency=False)["ee.locality"] == 1.0  # unedited: agrees


def test_the_entropy_of_known_word_lists():
    # "a b a b": bigrams ab, ba, ab (H2 = H(2/3, 1/3)); trigrams aba, bab (H3 = 1 bit)
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ee.reference_entropy(["a", "b", "a", "b"]) == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert ee.reference_entropy(["a", "a", "a"]) == 0.0 and ee.reference_entropy(["one"]) == 0.0
    assert ee.words("He went to Paris. It rained!") == ["He", "went", "to", "Paris", ".", "It", "rained", "!"]


def test_the_fluency_text_is_top5_sampling_to_100_tokens_with_the_prompt_kept(organism):
    prompt = "SMAP was created in"
    got = ee.reference_text(organism, prompt, seed=3)
    # the plain loop: the whole sequence through the uncached model each step, 5 best logits, one draw
    tok, twin = organism.tokenizer, plain_twin(organism)
    ids = tok(prompt)["input_ids"]
    generator = torch.Generator().manual_seed(3)
    while len(ids) < 100:
        logits = twin(torch.tensor([ids])).logits[0, -1].float()
        values, index = logits.topk(5)
        ids.append(int(index[torch.multinomial(torch.softmax(values, -1), 1, generator=generator)]))
    plain = unicodedata.normalize("NFKD", tok.decode(ids, skip_special_tokens=True)).replace("\n\n", " ")
    assert got == plain and got.startswith(prompt)
    assert ee.reference_fluency(organism, prompt, 3) == pytest.approx(ee.reference_entropy(ee.words(plain)))


def convsent_case(organism) -> EditCase:
    from kelocate.studies.knowedit.plan import load_cases, task_files

    cases = load_cases(task_files(_config(), organism)["ConvSent"], "ConvSent")
    return ee.with_next_topics([ee.convsent_request(c, 0) for c in cases[:3]])[0]


def _config():
    from kelocate.studies.knowedit.config import StudyConfig, check_config

    return check_config(StudyConfig(methods=["ft-m"], tasks=["ConvSent"], cases=1))


@torch.no_grad()
def plain_reply_logprobs(model, text: str, start: int) -> list[float]:
    ids = model.tokenizer(text)["input_ids"]
    logp = torch.log_softmax(plain_twin(model)(torch.tensor([ids])).logits[0].double(), -1)
    return [float(logp[j - 1, ids[j]]) for j in range(start, len(ids))]


def test_convsent_soft_score_and_kl_equal_a_per_reply_loop(organism):
    case = convsent_case(organism)
    assert case.prompt.startswith("From the sentiment dataset, answer ") and case.prompt.endswith("ly.")
    assert case.target_new == case.extra["pos" if case.extra["sentiment"] == "positive" else "neg"][0]
    texts, targets = ee.convsent_texts(organism, case)
    outer_texts, outer_targets = ee.convsent_texts(organism, case, other=True)

    def pooled(of: bool) -> float:
        values = [v for t, (wanted, s) in zip(texts, targets, strict=True) if wanted == of
                  for v in plain_reply_logprobs(organism, t, s)]
        return sum(values) / len(values)

    @torch.no_grad()
    def outer_logprobs():
        rows = []
        for text, (_, start) in zip(outer_texts, outer_targets, strict=True):
            ids = organism.tokenizer(text)["input_ids"]
            logp = torch.log_softmax(plain_twin(organism)(torch.tensor([ids])).logits[0].double(), -1)
            rows += [logp[j - 1] for j in range(start, len(ids))]
        return torch.stack(rows)

    pos_before, outer_before = pooled(True), outer_logprobs()
    before = ee.reference_baselines(organism, [case])[0]
    record = editor("ft-m").apply(organism, EditRequest(case.prompt, case.subject, case.target_new))
    try:
        got = ee.reference_scores(organism, case, before, fluency=False)
        pos, neg, outer_after = pooled(True), pooled(False), outer_logprobs()
    finally:
        record.revert()
    expected = 1 / (1 + math.exp(-(pos - neg))) * min(1.0, math.exp(pos - pos_before))
    assert got["ee.sentiment"] == pytest.approx(expected, rel=1e-6)
    kl = float((outer_before.exp() * (outer_before - outer_after)).sum(-1).mean())
    assert got["ee.kl"] == pytest.approx(kl, rel=1e-4, abs=1e-7) and kl > 0  # the edit moved the other topic
    # the unedited model against itself: no KL, and the topic factor is 1
    same = ee.reference_scores(organism, case, before, fluency=False)
    assert same["ee.kl"] == pytest.approx(0.0, abs=1e-9)


def test_sanitation_success_and_locality_from_greedy_new_tokens(organism):
    questions = ["Question:What type of creature is the currawong?\nAnswer:", "Question:Who wrote Hamlet?\nAnswer:",
                 "Question:What is the capital of France?\nAnswer:"]
    case = EditCase("Sanitation", "", questions[0], "I don't know.", "Birds",
                    locality={"Retain": tuple(Probe(q, ("x",)) for q in questions[1:])}, source=("t", 0))
    twin, tok = plain_twin(organism), organism.tokenizer

    def plain_greedy(prompt: str) -> list[int]:
        ids = tok(prompt)["input_ids"]
        start = len(ids)
        for _ in range(10):
            ids.append(int(twin(torch.tensor([ids])).logits[0, -1].argmax()))
        return ids[start:]

    assert ee.greedy_new_tokens(organism, questions, 10) == [plain_greedy(q) for q in questions]
    before = ee.reference_baselines(organism, [case])[0]
    got = ee.reference_scores(organism, case, before)
    said = tok.decode(plain_greedy(questions[0]), skip_special_tokens=True)
    assert got["ee.edit"] == float("i don't know." in (questions[0] + said).lower())
    assert got["ee.locality"] == 1.0  # the unedited model repeats itself


def test_convsent_requests_are_seeded_per_case_and_the_profiles_are_checked():
    base = EditCase("ConvSent", "Estero", "What do you think of Estero?", "x", extra={"pos": ["good"], "neg": ["bad"]},
                    source=("f", 7))
    first, again = ee.convsent_request(base, 0), ee.convsent_request(base, 0)
    assert first == again and first.target_new in ("good", "bad")
    directions = {ee.convsent_request(base, seed).extra["sentiment"] for seed in range(20)}
    assert directions == {"positive", "negative"}  # a seeded coin, not a fixed direction
    from dataclasses import replace

    for folder in ("/data/a", "/elsewhere/b/c"):  # the same file in another folder asks the same edits
        moved = replace(base, source=(f"{folder}/f", 7))
        assert all(ee.convsent_request(moved, seed) == replace(ee.convsent_request(base, seed), source=moved.source)
                   for seed in range(20))
        assert ee.case_seed(moved) == ee.case_seed(base) == "f:7"
    from kelocate.studies.knowedit.config import StudyConfig, check_config

    with pytest.raises(KelocateError, match="unknown metric profile 'paper'"):
        check_config(StudyConfig(tasks=["ZsRE"], metrics=["paper"]))
    with pytest.raises(KelocateError, match="unknown requests"):
        check_config(StudyConfig(tasks=["ZsRE"], requests="other"))
