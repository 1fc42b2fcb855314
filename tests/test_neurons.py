"""Knowledge neurons: the fast IG engine against the reference, IG completeness, refining, interventions."""

from __future__ import annotations

import json

import pytest
import torch

from kelocate.errors import KelocateError
from kelocate.locate.neurons.find import coarse_neurons, find_knowledge_neurons, refine, shared_neurons
from kelocate.locate.neurons.ig import alphas, ig_fast, ig_reference, integrated_gradients, make_problem, target_at
from kelocate.locate.neurons.intervene import enhance, random_control, random_like, scale_neurons, suppress
from kelocate.model.sites import Patch, patching, read, site

PROMPT = "SMAP was created in"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("answer", ["Japan", "Japanese group"])
@pytest.mark.parametrize("target", ["prob", "logprob"])
def test_fast_engine_equals_reference(tiny_model, answer, target):
    problem = make_problem(tiny_model, PROMPT, answer)
    ref = ig_reference(tiny_model, problem, steps=8, target=target)
    fast = ig_fast(tiny_model, problem, steps=8, target=target)
    assert fast.scores.shape == (tiny_model.n_layers, tiny_model.d_mlp)
    assert fast.target_value == pytest.approx(ref.target_value, rel=1e-5)
    assert torch.allclose(fast.activations, ref.activations, atol=1e-5)
    assert _rel(fast.scores, ref.scores) < 1e-4


def test_fast_engine_layer_chunks_agree(tiny_model):
    problem = make_problem(tiny_model, PROMPT, "Japanese group")
    whole = ig_fast(tiny_model, problem, steps=4)
    one_by_one = ig_fast(tiny_model, problem, steps=4, layers_per_pass=1)
    some = ig_fast(tiny_model, problem, steps=4, layers=[2, 0])
    assert _rel(one_by_one.scores, whole.scores) < 1e-5
    assert _rel(some.scores[[0, 2]], whole.scores[[0, 2]]) < 1e-5 and torch.isnan(some.scores[1]).all()


def test_multi_token_answer_is_teacher_forced(tiny_model):
    problem = make_problem(tiny_model, PROMPT, "Japanese group")
    assert len(problem.answer_ids) > 1
    assert problem.position == len(tiny_model.encode(PROMPT)) - 1
    assert problem.ids.tolist()[problem.position + 1:] == list(problem.answer_ids[:-1])
    attr = ig_fast(tiny_model, problem, steps=2)
    assert attr.target_value == pytest.approx(tiny_model.answer_prob(PROMPT, "Japanese group"), rel=1e-4)
    assert "exp of the sum of the log-probs" in attr.target_description


def test_only_chosen_layers_are_scored(tiny_model):
    attr = integrated_gradients(tiny_model, PROMPT, "Japan", steps=2, layers=[1])
    assert torch.isnan(attr.scores[0]).all() and not torch.isnan(attr.scores[1]).any()
    with pytest.raises(KelocateError, match="layer 7 does not exist"):
        integrated_gradients(tiny_model, PROMPT, "Japan", steps=2, layers=[7])


@pytest.mark.parametrize("target", ["prob", "logprob"])
def test_ig_completeness_converges(tiny_model, target):
    """Each layer's scores sum to F(a) - F(0); the Riemann error shrinks like 1/m."""
    problem = make_problem(tiny_model, PROMPT, "Japan")
    errors = {}
    for steps in (20, 200):
        attr = ig_fast(tiny_model, problem, steps=steps, target=target)
        errs = []
        for layer in range(tiny_model.n_layers):
            ends = target_at(tiny_model, problem, layer, torch.tensor([0.0, 1.0]), target)
            delta = float(ends[1] - ends[0])
            errs.append(abs(float(attr.scores[layer].sum()) - delta) / (abs(delta) + 1e-12))
        errors[steps] = max(errs)
    assert errors[20] < 0.1  # a right Riemann sum with 20 steps
    assert errors[200] < 0.02 and errors[200] < errors[20]


def test_coarse_threshold_absolute_and_top_k(tiny_model):
    attr = integrated_gradients(tiny_model, PROMPT, "Japan", steps=4)
    best = float(torch.nan_to_num(attr.scores, nan=-1e9).max())
    rows = coarse_neurons(attr, 0.2)
    assert rows and all(s >= 0.2 * best for _, _, s in rows)
    assert rows[0][2] == pytest.approx(best)
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)
    assert len(coarse_neurons(attr, 0.0, top_k=3)) == 3
    assert all(s >= best / 2 for _, _, s in coarse_neurons(attr, absolute=best / 2))
    with pytest.raises(KelocateError, match="--threshold"):
        coarse_neurons(attr, 1.5)


def test_refined_neurons_follow_their_rule():
    sets = [{(0, 1), (0, 2), (1, 5), (2, 9)}, {(0, 1), (1, 5), (2, 9), (2, 3)}, {(0, 1), (1, 5), (1, 7)}]
    assert shared_neurons(sets, 1.0) == [(0, 1), (1, 5)]
    assert shared_neurons(sets, 0.6) == [(0, 1), (1, 5), (2, 9)]
    fixed = refine(sets, p=0.7, adaptive=False)
    assert fixed.neurons == [(0, 1), (1, 5)] and fixed.rule_holds()
    # too many at p = 0.7 -> p rises until at most max_neurons remain
    many = [{(0, i) for i in range(10)}] * 3 + [{(0, i) for i in range(3)}]
    r = refine(many, p=0.5, max_neurons=5)
    assert r.neurons == [(0, 0), (0, 1), (0, 2)] and r.p > 0.75 and r.rule_holds()
    # too few -> p falls, but never below p_min
    few = [{(0, 1)}, {(0, 1), (0, 2)}, {(0, 3)}, {(0, 2)}]
    r = refine(few, p=0.7, min_neurons=2, p_min=0.5)
    assert set(r.neurons) == {(0, 1), (0, 2)} and r.p == pytest.approx(0.5) and r.rule_holds()
    # a set in which no p gives a handful keeps the rule anyway
    r = refine([{(0, 1)}, {(0, 2)}], p=0.7, min_neurons=2, p_min=0.5)
    assert r.neurons == [(0, 1), (0, 2)] and r.rule_holds()


def test_find_knowledge_neurons_refines_paraphrases(tiny_model, tmp_path):
    prompts = [PROMPT, "SMAP is a group created in", "The group SMAP was created in"]
    res = find_knowledge_neurons(tiny_model, prompts, "Japan", steps=4)
    sets = [{(la, i) for la, i, _ in rows} for rows in res.coarse]
    counts = {n: sum(n in s for s in sets) for n in set().union(*sets)}
    assert set(res.neurons) == {n for n, c in counts.items() if c >= res.refined_p * 3 - 1e-9}
    saved = json.loads(res.save(tmp_path / "kn.json").read_text())
    assert saved["neurons"] == [list(n) for n in res.neurons] and saved["refined_p"] == res.refined_p
    assert "prompt's last position" in saved["target_description"]


def test_suppress_and_enhance_are_reversible(tiny_model):
    weights = {k: v.clone() for k, v in tiny_model.hf.state_dict().items()}
    hooks = {name: len(m._forward_pre_hooks) for name, m in tiny_model.hf.named_modules()}
    res = find_knowledge_neurons(tiny_model, PROMPT, "Japan", steps=4, top_k=5)
    p0 = tiny_model.answer_prob(PROMPT, "Japan")
    down = suppress(tiny_model, res.neurons, [PROMPT], "Japan")
    up = enhance(tiny_model, res.neurons, [PROMPT], "Japan")
    assert down.before == [pytest.approx(p0)] and up.before == [pytest.approx(p0)]
    assert down.after[0] != pytest.approx(p0) and up.after[0] != pytest.approx(p0)
    assert tiny_model.answer_prob(PROMPT, "Japan") == pytest.approx(p0, rel=1e-6)
    for k, v in tiny_model.hf.state_dict().items():
        assert torch.equal(v, weights[k])
    assert hooks == {name: len(m._forward_pre_hooks) for name, m in tiny_model.hf.named_modules()}


def test_scaling_hook_matches_fast_engine(tiny_model):
    """The `mlp_post` Patch (bridge path) and the engine's scaled forward agree."""
    problem = make_problem(tiny_model, PROMPT, "Japan")
    layer, idx = 1, list(range(tiny_model.d_mlp))
    with scale_neurons(tiny_model, [(layer, i) for i in idx], 0.5, problem.position):
        hooked = tiny_model.answer_prob(PROMPT, "Japan")
    engine = float(target_at(tiny_model, problem, layer, torch.tensor([0.5]))[0])
    assert hooked == pytest.approx(engine, rel=1e-4)


def test_scaling_writes_out_of_place_and_reaches_every_forward(tiny_model):
    """A reader attached before the scaling keeps the model's own activation (the Patch writes a scaled copy),
    and the scaling reaches kelocate's scores and the raw HF forward alike (the bridge wraps its modules)."""
    from kelocate.model.sites import Patch, patching, site

    ids = tiny_model.encode(PROMPT).ids[None]
    kept = {}

    def keep(x: torch.Tensor) -> torch.Tensor:
        kept["x"] = x
        return x

    before_hf, before = tiny_model.hf(ids).logits, tiny_model.logits(ids)
    with torch.no_grad(), patching(tiny_model, [Patch(site("mlp_post", 1), keep, differentiable=True)]):
        own = tiny_model.logits(ids)
        with scale_neurons(tiny_model, [(1, i) for i in range(tiny_model.d_mlp)], 0.0):
            clean = kept["x"].clone()
            scaled, scaled_hf = tiny_model.logits(ids), tiny_model.hf(ids).logits
            assert torch.equal(kept["x"], clean) and bool(clean.abs().sum() > 0)  # not zeroed in place
    assert torch.equal(own, before)
    assert not torch.equal(scaled, before) and torch.equal(scaled, scaled_hf)
    assert not torch.equal(scaled_hf, before_hf)


def test_random_control_uses_same_layers(tiny_model):
    import numpy as np

    neurons = [(0, 1), (0, 2), (2, 7)]
    picked = random_like(neurons, tiny_model.d_mlp, np.random.default_rng(0))
    assert sorted(la for la, _ in picked) == [0, 0, 2] and not set(picked) & set(neurons)
    ctl = random_control(tiny_model, neurons, [PROMPT], "Japan", 0.0, draws=3)
    assert ctl["draws"] == 3 and len(ctl["mean_after_per_draw"]) == 3


def test_bad_inputs_are_user_errors(tiny_model):
    with pytest.raises(KelocateError, match="--steps"):
        integrated_gradients(tiny_model, PROMPT, "Japan", steps=0)
    with pytest.raises(KelocateError, match="answer is empty"):
        integrated_gradients(tiny_model, PROMPT, " ", steps=2)
    with pytest.raises(KelocateError, match="neuron 9999"):
        with scale_neurons(tiny_model, [(0, 9999)], 0.0):
            pass


# ---------------------------------------------------------------------- specificity control

CONTROL = {"same_relation": [("SMAP was founded in", "Japan"), ("The group SMAP comes from", "Japan"),
                             ("Paris is a city in", "France")],
           "unrelated": [("Berlin is", "Germany"), ("The language of Japan is", "Japanese group")]}


def _logits(model) -> torch.Tensor:
    ids, mask = model.batch_ids([PROMPT, "Paris is a city in the country of"])
    return model.logits(ids, mask)


def test_specificity_control_leaves_the_model_untouched(tiny_model):
    from kelocate.locate.neurons.specificity import specificity_control

    weights = {k: v.clone() for k, v in tiny_model.hf.state_dict().items()}
    hooks = {name: len(m._forward_pre_hooks) + len(m._forward_hooks) for name, m in tiny_model.hf.named_modules()}
    clean = _logits(tiny_model)
    spec = specificity_control(tiny_model, [(0, 3), (2, 7), (2, 11)], CONTROL, 0.0, target_change=-0.5)
    assert any(r.after != r.before for g in spec.groups.values() for r in g.rows)  # it did bite
    assert torch.equal(_logits(tiny_model), clean)
    assert all(torch.equal(v, weights[k]) for k, v in tiny_model.hf.state_dict().items())
    assert hooks == {name: len(m._forward_pre_hooks) + len(m._forward_hooks)
                     for name, m in tiny_model.hf.named_modules()}


def _plain_loop(model, neurons, facts, factor, all_positions):
    """p before/after one fact at a time, the intervention written out by hand."""
    out = []
    for q, a in facts:
        before = model.answer_prob(q, a)
        position = None if all_positions else len(model.encode(q)) - 1
        with scale_neurons(model, neurons, factor, position):
            out.append((before, model.answer_prob(q, a)))
    return out


@pytest.mark.parametrize("factor,all_positions", [(0.0, False), (2.0, False), (0.0, True)])
def test_specificity_groups_equal_a_plain_loop(tiny_model, factor, all_positions):
    import numpy as np
    from tolerances import tol

    from kelocate.locate.neurons.intervene import logodds
    from kelocate.locate.neurons.specificity import specificity_control

    neurons = [(0, 3), (1, 40), (2, 7), (2, 11)]
    spec = specificity_control(tiny_model, neurons, CONTROL, factor, all_positions)
    for name, facts in CONTROL.items():
        plain = _plain_loop(tiny_model, neurons, facts, factor, all_positions)
        group = spec.groups[name]
        got = [(r.before, r.after) for r in group.rows]
        assert [(r.prompt, r.answer) for r in group.rows] == facts
        assert np.allclose(got, plain, rtol=0, atol=tol(torch.tensor(plain)))
        rel = [(a - b) / b for b, a in plain]
        odds = [logodds(a) - logodds(b) for b, a in plain]
        assert group.mean_relative_change == pytest.approx(np.mean(rel), abs=tol(max(map(abs, rel))))
        assert group.mean_logodds_change == pytest.approx(np.mean(odds), abs=tol(max(map(abs, odds))))
        assert group.to_dict()["n"] == len(facts)


def test_specificity_verdict():
    from kelocate.locate.neurons.specificity import FactChange, GroupChange, Specificity

    def spec(same: float, other: float, target: float = -0.6) -> Specificity:
        groups = {"same_relation": GroupChange("same_relation", [FactChange("a", "b", 0.5, 0.5 * (1 + same))]),
                  "unrelated": GroupChange("unrelated", [FactChange("c", "d", 0.5, 0.5 * (1 + other))])}
        return Specificity(0.0, [(0, 1)], False, groups, target, "capital")

    assert "relation neurons, not fact neurons" in spec(-0.4, -0.01).verdict
    assert "other 'capital' facts" in spec(-0.4, -0.01).verdict
    assert spec(-0.1, 0.0).verdict.startswith("specific to this fact")
    assert "unrelated facts" in spec(-0.5, -0.5).verdict
    assert spec(-0.4, 0.0).to_dict()["verdict"] == spec(-0.4, 0.0).verdict
    assert "cannot be judged" in spec(-0.4, 0.0, target=0.0).verdict


def test_unknown_prompts_get_a_note(tiny_model):
    from kelocate.locate.neurons.find import unknown_notes

    notes = unknown_notes(tiny_model, [PROMPT, "SMAP is from"], "Japan")
    assert len(notes) == 2 and notes[0].startswith(f"the prompt {PROMPT!r}") and "paraphrase" in notes[1]
    p = tiny_model.answer_prob(PROMPT, "Japan")
    assert f"p(Japan) = {p:.3f}" in notes[0]
    res = find_knowledge_neurons(tiny_model, [PROMPT, "SMAP is from"], "Japan", steps=2)
    assert [n for n in res.notes if "not known" in n] == notes


def test_organism_control_facts_share_the_relation(organism):
    from kelocate.locate.neurons.find import unknown_notes
    from kelocate.locate.neurons.specificity import pick_known
    from kelocate.model.scoring import score_targets
    from kelocate.organism import world_file
    from kelocate.organism.datasets import organism_candidates
    from kelocate.organism.world import load_world

    world = load_world(world_file(organism.path))
    by_prompt = {fp.prompt: fp for fp in world.fact_prompts(split="known", templates="all")}
    label, same, other = organism_candidates(organism, "The capital of Japan is", "Tokyo")
    assert label == world.relations["capital"].label
    picked = pick_known(organism, same, 5, seed=0)
    assert len(picked) == 5 and picked == pick_known(organism, same, 5, seed=0)  # seeded
    assert picked != pick_known(organism, same, 5, seed=1)
    for q, a in picked:
        fp = by_prompt[q]
        assert fp.relation == "capital" and fp.template == "The capital of {s} is" and fp.subject != "Japan"
        assert a == fp.answer != "Tokyo"
    unrelated = pick_known(organism, other, 5, seed=0)
    assert len(unrelated) == 5 and all(by_prompt[q].relation != "capital" for q, _ in unrelated)
    assert all(s.correct and s.prob >= 0.1 for s in score_targets(organism, *zip(*picked + unrelated, strict=True)))
    assert organism_candidates(organism, "Nothing of the world is", "x") is None
    assert unknown_notes(organism, ["The capital of Japan is"], "Tokyo") == []


def test_a_top_token_that_is_no_text_alone_answers_every_paraphrase(tiny_model, monkeypatch):
    """Without a ground truth (KnowEdit's WikiData_recent) KN attributes the model's top next token, which on a
    real model may be a space or a newline: the paraphrases get that token as it is, not its text tokenized
    again (a space alone is no answer text, so that raised "the answer is empty" on SmolLM2)."""
    space = tiny_model.encode(" ", special=False).ids.tolist()
    assert len(space) == 1
    real = type(tiny_model).logits

    def space_on_top(self, ids, attention_mask=None):
        out = real(self, ids, attention_mask)
        out[..., space[0]] += 1e3
        return out

    monkeypatch.setattr(type(tiny_model), "logits", space_on_top)  # the model's attributes are sealed
    with pytest.raises(KelocateError, match="empty"):
        tiny_model.answer_ids(PROMPT, tiny_model.decode(space))
    res = find_knowledge_neurons(tiny_model, [PROMPT, "SMAP is from"], None, steps=2)
    assert res.answer_tokens == space and res.answer == tiny_model.decode(space)
    assert not [n for n in res.notes if "not known" in n]  # both prompts scored on that token: p ~ 1
    assert integrated_gradients(tiny_model, "SMAP is from", space, steps=2).problem.answer_ids == tuple(space)
    with pytest.raises(KelocateError, match="no token"):
        make_problem(tiny_model, PROMPT, [])


LONG_ANSWER = "I liked them as a kid, though I can't say if they'd hold up today, since I haven't read them in years."


@pytest.fixture(scope="module")
def tiny_model_f64(tiny_model_dir):
    from kelocate.loading import load_model

    return load_model(tiny_model_dir, dtype="float64")


@pytest.mark.parametrize("engine", [ig_fast, ig_reference])
def test_an_answer_whose_probability_float32_cannot_hold(tiny_model, tiny_model_f64, engine):
    """A ConvSent reply as the answer: p(answer) ~ e^-370, below float32's (and HF's float32 RMSNorm's) range. The
    scores equal a float64 computation of the chain rule, dp/dx = p * dlog p/dx row by row, to float32 tolerance,
    instead of denormal or zero gradients."""
    problem = make_problem(tiny_model, PROMPT, LONG_ANSWER)
    attr = engine(tiny_model, problem, steps=4)
    assert attr.target_value < 1e-38 and attr.scores.dtype == torch.float64
    assert torch.isfinite(attr.scores).all() and (attr.scores != 0).any()
    ids = problem.ids[None]
    pos, width = problem.position, len(problem.answer_ids)
    with torch.no_grad():
        _, cache = read(tiny_model_f64, ids, None, [site("mlp_post", layer) for layer in range(tiny_model.n_layers)])
    answer = torch.tensor(problem.answer_ids)
    for layer in range(tiny_model.n_layers):
        base = cache[site("mlp_post", layer)][0, pos]
        total = torch.zeros_like(base)
        for alpha in alphas(4, dtype=torch.float64):  # one step at a time: the plain loop
            leaf = (alpha * base)[None].requires_grad_(True)
            with torch.enable_grad(), patching(tiny_model_f64, [Patch(site("mlp_post", layer), leaf, positions=pos,
                                                                      differentiable=True)]):
                out, _ = read(tiny_model_f64, ids, None, [])
                logp = torch.log_softmax(out[0, pos:pos + width].double(), -1)
                log_p = logp.gather(-1, answer[:, None]).sum()
                (grad,) = torch.autograd.grad(log_p, leaf)
            total += log_p.detach().exp() * grad[0]
        expected = base * total / 4
        assert float((attr.scores[layer] - expected).abs().max()) <= 1e-3 * float(expected.abs().max())


def test_a_long_answer_is_attributed_a_few_layers_per_pass(tiny_model):
    """The fast engine's passes stay within a memory budget (a 30-token ConvSent reply on SmolLM2 asked for
    25 GB in one pass and was killed): a one-token answer fits one pass, a long one is split, and the split
    passes give the scores of one pass."""
    from kelocate.locate.neurons.ig import PASS_BYTES, pass_size

    short, long = make_problem(tiny_model, PROMPT, "Japan"), make_problem(tiny_model, PROMPT, LONG_ANSWER)
    layers = tiny_model.n_layers
    assert pass_size(tiny_model, short, 20, layers) == layers
    per_row = len(long.answer_ids) * (layers * (12 * tiny_model.d_model + 4 * tiny_model.d_mlp) * 4
                                      + 3 * tiny_model.hf.config.vocab_size * 4)
    budget = 20 * per_row  # room for one layer's 20 steps
    assert pass_size(tiny_model, long, 20, layers, budget) == 1
    assert pass_size(tiny_model, long, 20, layers, 2 * budget - 1) == 1
    assert pass_size(tiny_model, long, 20, layers, 2 * budget) == 2
    assert pass_size(tiny_model, long, 20, layers, 10) == 1  # never none
    assert PASS_BYTES >= 2**30
    whole = ig_fast(tiny_model, long, steps=4, layers_per_pass=layers)
    split = ig_fast(tiny_model, long, steps=4, layers_per_pass=1)
    assert _rel(split.scores, whole.scores) < 1e-5
