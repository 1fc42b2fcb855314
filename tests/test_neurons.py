"""Knowledge neurons: the fast IG engine against the reference, IG completeness, refining, interventions."""

from __future__ import annotations

import json

import pytest
import torch

from kelocate.errors import KelocateError
from kelocate.locate.neurons.find import coarse_neurons, find_knowledge_neurons, refine, shared_neurons
from kelocate.locate.neurons.ig import ig_fast, ig_reference, integrated_gradients, make_problem, target_at
from kelocate.locate.neurons.intervene import enhance, random_control, random_like, scale_neurons, suppress

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
    """The down_proj pre-hook (bridge path) and the engine's scaled forward agree."""
    problem = make_problem(tiny_model, PROMPT, "Japan")
    layer, idx = 1, list(range(tiny_model.d_mlp))
    with scale_neurons(tiny_model, [(layer, i) for i in idx], 0.5, problem.position):
        hooked = tiny_model.answer_prob(PROMPT, "Japan")
    engine = float(target_at(tiny_model, problem, layer, torch.tensor([0.5]))[0])
    assert hooked == pytest.approx(engine, rel=1e-4)


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
