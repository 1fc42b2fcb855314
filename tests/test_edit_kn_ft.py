"""KN (value slots of given neurons) and the fine-tuning baselines FT-L / FT-M, on a tiny random Llama.

The closed form of KN's slot update and the two fine-tuning losses are checked against plain loops; in the
model, each editor must write only what it claims (the listed columns, the chosen layer's down_proj),
respect its constraint, move the target's log-probability up, leave requires_grad as it was, and revert
to bit-identical weights.
"""

from __future__ import annotations

import pytest
import torch

from kelocate.edit import editor
from kelocate.edit.losses import last_token_loss, masked_target_loss, prompt_batch, prompt_target_batch
from kelocate.edit.methods.ft import FTL, FTM
from kelocate.edit.methods.kn import KN, slot_update
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError
from kelocate.model import weights

REQUEST = EditRequest("SMAP was created in", "SMAP", "France", ground_truth="Japan")
MULTI = EditRequest("SMAP was created in", "SMAP", "Franceville", ground_truth="Japan")  # 6 target tokens
OTHER = EditRequest("Paris is the capital of", "Paris", "Japan")
FT_FAST = {"lr": 1e-2, "steps": 6}


def others_equal(model, before: dict[str, torch.Tensor], skip: str | None) -> bool:
    """Every parameter but `skip` is bit-identical to the snapshot `before`."""
    return all(torch.equal(weights.parameter(model, n), v) for n, v in before.items() if n != skip)


def all_params(model) -> dict[str, torch.Tensor]:
    return weights.snapshot(model, weights.parameter_names(model))


# ---------------------------------------------------------------------- closed forms vs loops
@pytest.mark.parametrize("lambdas", [(2.0, 2.0), (1.0, 0.5)])
def test_slot_update_matches_a_loop(lambdas):
    g = torch.Generator().manual_seed(0)
    weight, emb = torch.randn(6, 10, generator=g), torch.randn(20, 6, generator=g)
    neurons, old, new = [1, 4, 7], [3, 5], [2, 11, 2]
    out = slot_update(weight, neurons, old, new, emb, lambdas)
    ref = weight.double().clone()
    for i in neurons:
        for d in range(6):
            for o in old:
                ref[d, i] -= lambdas[0] * emb[o, d].double()
            for n in new:
                ref[d, i] += lambdas[1] * emb[n, d].double()
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-6)
    untouched = [j for j in range(10) if j not in neurons]
    assert torch.equal(out[:, untouched], weight[:, untouched])
    assert out.dtype == weight.dtype and not torch.equal(out, weight)


def test_masked_target_loss_ignores_prompt_tokens():
    g = torch.Generator().manual_seed(1)
    logits, ids = torch.randn(3, 7, 11, generator=g), torch.randint(0, 11, (3, 7), generator=g)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[0, 3:7], mask[1, 2:4], mask[2, 5:6] = True, True, True  # row 1: padding after position 3
    loss = masked_target_loss(logits, ids, mask)
    per_example = []
    for b in range(3):
        terms = [-torch.log_softmax(logits[b, t - 1].double(), -1)[ids[b, t]] for t in range(1, 7) if mask[b, t]]
        per_example.append(sum(terms) / len(terms))
    torch.testing.assert_close(loss.double(), sum(per_example) / 3, rtol=0, atol=1e-5)
    # logits that predict prompt or padding tokens do not matter
    changed = logits.clone()
    for b in range(3):
        for t in range(7):
            if t + 1 >= 7 or not mask[b, t + 1]:
                changed[b, t] = torch.randn(11, generator=g) * 5
    assert torch.equal(masked_target_loss(changed, ids, mask), loss)


def test_last_token_loss_is_a_bag_of_tokens_at_the_last_prompt_token():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 9, generator=g)
    last, targets = torch.tensor([4, 2]), torch.tensor([[3, 1, 7], [5, 0, 0]])
    tmask = torch.tensor([[True, True, True], [True, False, False]])
    loss = last_token_loss(logits, last, targets, tmask)
    ref = []
    for b, n in ((0, 3), (1, 1)):
        logp = torch.log_softmax(logits[b, int(last[b])].double(), -1)
        ref.append(-sum(logp[targets[b, j]] for j in range(n)) / n)
    torch.testing.assert_close(loss.double(), sum(ref) / 2, rtol=0, atol=1e-5)


def test_batches_mark_the_right_positions(tiny_model):
    model = tiny_model
    prompt = model.encode(MULTI.prompt).ids.tolist()
    target = model.answer_ids(MULTI.prompt, MULTI.target_new)
    full = prompt_target_batch(model, [MULTI, OTHER])
    assert full["ids"][0, : len(prompt) + len(target)].tolist() == prompt + target
    assert full["target_mask"][0].nonzero()[:, 0].tolist() == list(range(len(prompt), len(prompt) + len(target)))
    assert int(full["target_mask"][1].sum()) == len(model.answer_ids(OTHER.prompt, OTHER.target_new))
    last = prompt_batch(model, [MULTI, OTHER])
    assert last["last"].tolist() == [len(prompt) - 1, len(model.encode(OTHER.prompt).ids) - 1]
    assert last["targets"][0].tolist() == target and int(last["target_mask"][0].sum()) == len(target)


# ---------------------------------------------------------------------- KN in a model
def test_kn_erase_zeroes_exactly_those_columns(tiny_model):
    model = tiny_model
    original, before = weights.state_hash(model), all_params(model)
    neurons = [(2, 100), (0, 3), (2, 7), (0, 3)]
    record = KN(mode="erase").apply(model, REQUEST, neurons=neurons)
    try:
        assert record.neurons == [(0, 3), (2, 7), (2, 100)] and record.layers == [0, 2]
        assert record.names == [weights.mlp_out_name(0), weights.mlp_out_name(2)]
        for layer, cols in ((0, [3]), (2, [7, 100])):
            name = weights.mlp_out_name(layer)
            w, w0 = weights.parameter(model, name), before[name]
            assert (w[:, cols] == 0).all()
            rest = [j for j in range(model.d_mlp) if j not in cols]
            assert torch.equal(w[:, rest], w0[:, rest])
        assert all(torch.equal(weights.parameter(model, n), v) for n, v in before.items()
                   if n not in record.names)
        assert record.changed_elements() == 3 * model.d_model
    finally:
        record.revert()
    assert weights.state_hash(model) == original


@pytest.mark.parametrize("request_, lam", [(REQUEST, 2.0), (MULTI, 1.0), (OTHER, 2.0)])
def test_kn_update_changes_only_the_listed_columns(tiny_model, request_, lam):
    model = tiny_model
    original, before = weights.state_hash(model), all_params(model)
    record = editor("kn").apply(model, request_, neurons=[(1, 5), (1, 64)])
    try:
        name = weights.mlp_out_name(1)
        assert record.names == [name] and record.extra["lambda"] == lam and record.neurons == [(1, 5), (1, 64)]
        new_ids = model.answer_ids(request_.prompt, request_.target_new)
        assert record.extra["new_ids"] == new_ids
        if request_.ground_truth is None:  # the model's own top token is what gets removed
            assert record.extra["old_ids"] == [int(model.next_token_probs(request_.prompt).argmax())]
        w, w0 = weights.parameter(model, name), before[name]
        rest = [j for j in range(model.d_mlp) if j not in (5, 64)]
        assert torch.equal(w[:, rest], w0[:, rest]) and others_equal(model, before, name)
        emb = weights.embedding(model).detach().double()
        expected = lam * (emb[new_ids].sum(0) - emb[record.extra["old_ids"]].sum(0))
        for col in (5, 64):
            torch.testing.assert_close((w[:, col].double() - w0[:, col].double()), expected, rtol=0, atol=1e-5)
    finally:
        record.revert()
    assert weights.state_hash(model) == original


@pytest.mark.parametrize("neurons, message", [
    (None, "pass neurons="),
    ([], "no neurons given"),
    ([(3, 0)], "layer 3 does not exist"),
    ([(-1, 0)], "layer -1 does not exist"),
    ([(0, 128)], "index 128 does not exist"),
    ([(0, -2)], "index -2 does not exist"),
    ([(0, "7")], "not a \\(layer, index\\) pair"),
    ([(0, 1, 2)], "not a \\(layer, index\\) pair"),
    ([3], "not a \\(layer, index\\) pair"),
    ("0,3", "list of \\(layer, index\\) pairs"),
])
def test_bad_neurons_are_one_line_errors(tiny_model, neurons, message):
    original = weights.state_hash(tiny_model)
    with pytest.raises(KelocateError, match=message) as info:
        KN().apply(tiny_model, REQUEST, neurons=neurons)
    assert "\n" not in str(info.value)
    assert weights.state_hash(tiny_model) == original


def test_kn_settings_are_checked(tiny_model):
    with pytest.raises(KelocateError, match="unknown kn mode 'zap'"):
        KN(mode="zap").apply(tiny_model, REQUEST, neurons=[(0, 1)])
    with pytest.raises(KelocateError, match="unknown kn setting 'lambda'"):
        KN(**{"lambda": 3}).apply(tiny_model, REQUEST, neurons=[(0, 1)])
    with pytest.raises(KelocateError, match="edits the layers of its neurons"):
        KN().apply(tiny_model, REQUEST, neurons=[(0, 1)], layers=[2])
    with pytest.raises(KelocateError, match="one fact at a time"):
        KN().apply(tiny_model, [REQUEST, OTHER], neurons=[(0, 1)])


# ---------------------------------------------------------------------- FT-L / FT-M in a model
@pytest.mark.parametrize("cls, request_", [(FTL, REQUEST), (FTM, REQUEST), (FTM, MULTI)])
def test_ft_changes_only_the_chosen_layer_and_raises_the_target(tiny_model, cls, request_):
    model = tiny_model
    original, before = weights.state_hash(model), all_params(model)
    flags = {n: p.requires_grad for n, p in model.hf.named_parameters()}
    logprob = model.answer_logprob(request_.prompt, request_.target_new)
    record = cls(**FT_FAST).apply(model, request_, layers=[2])
    try:
        name = weights.mlp_out_name(2)
        assert record.names == [name] and record.layers == [2] and record.config["lr"] == 1e-2
        assert others_equal(model, before, name) and record.changed_elements() > 0
        assert model.answer_logprob(request_.prompt, request_.target_new) > logprob + 0.1
        losses = record.extra["losses"]
        assert record.extra["final_loss"] < losses[0] and record.extra["steps"] == len(losses) <= 6
        assert {n: p.requires_grad for n, p in model.hf.named_parameters()} == flags
        assert all(p.grad is None for p in model.hf.parameters())
    finally:
        record.revert()
    assert weights.state_hash(model) == original


@pytest.mark.parametrize("cls", [FTL, FTM])
def test_ft_respects_the_norm_constraint(tiny_model, cls):
    model = tiny_model
    original = weights.state_hash(model)
    eps = 1e-3
    record = cls(lr=1e-2, steps=4, norm_constraint=eps).apply(model, REQUEST, layers=1)
    try:
        name = weights.mlp_out_name(1)
        w0 = record.before[name]
        gap = (weights.parameter(model, name).detach() - w0).abs().max()
        assert 0 < gap <= eps + 2 * torch.finfo(w0.dtype).eps * float(w0.abs().max() + eps)
        assert gap > 0.5 * eps  # lr 1e-2 would go further: the clamp is what stops it
    finally:
        record.revert()
    assert weights.state_hash(model) == original


def test_ft_trains_a_batch_and_stops_early(tiny_model):
    model = tiny_model
    original = weights.state_hash(model)
    before = [model.answer_logprob(r.prompt, r.target_new) for r in (REQUEST, OTHER)]
    # a random tiny model cannot reach the shipped 1e-2 (its logits are small); stop at a loss it reaches
    record = FTM(lr=5e-2, steps=40, loss_stop=4.0).apply(model, [REQUEST, OTHER], layers=[1, 2])
    try:
        assert len(record.requests) == 2 and record.layers == [1, 2]
        losses = record.extra["losses"]
        assert losses[-1] < 4.0 <= min(losses[:-1]) and record.extra["steps"] < 40
        for r, old in zip((REQUEST, OTHER), before, strict=True):
            assert model.answer_logprob(r.prompt, r.target_new) > old + 0.5
    finally:
        record.revert()
    assert weights.state_hash(model) == original


def test_ft_layers_come_from_the_profile_and_bad_settings_fail(tiny_model):
    hp = FTL().hparams(tiny_model)
    assert hp["profile"] == "generic" and hp["layers"] == [round(0.68 * 2)] and hp["norm_constraint"] is False
    record = FTL(steps=1).apply(tiny_model, REQUEST)
    record.revert()
    assert record.layers == hp["layers"] and record.layer_origin["source"] == "config"
    with pytest.raises(KelocateError, match="unknown ft-m setting 'num_steps'"):
        FTM(num_steps=3).apply(tiny_model, REQUEST)
    with pytest.raises(KelocateError, match="positive learning rate"):
        FTL(lr=0.0).apply(tiny_model, REQUEST)
    with pytest.raises(KelocateError, match="norm_constraint' in the override must be a number or false"):
        FTL(norm_constraint="small").apply(tiny_model, REQUEST)


def test_ft_m_edits_an_organism_fact_with_the_shipped_profile():
    from kelocate.loading import load_model
    from kelocate.model.scoring import score_targets
    from kelocate.organism import world_file
    from kelocate.organism.datasets import organism_cases
    from kelocate.organism.world import load_world

    model = load_model()
    (case,) = organism_cases(model, load_world(world_file(model.path)), n=1)
    original = weights.state_hash(model)
    record = FTM().apply(model, case.request)
    try:
        assert record.config["profile"] == "organism" and record.layers == [4]
        assert score_targets(model, [case.request.prompt], [case.request.target_new])[0].correct
    finally:
        record.revert()
    assert weights.state_hash(model) == original


def test_ft_l_can_take_the_target_tokens_as_easyedit_does_bos_included(tiny_model):
    from kelocate.model.tokens import prefix_tokens

    request = EditRequest("SMAP was created in", "SMAP", "France")
    plain = prompt_batch(tiny_model, [request])["targets"][0].tolist()
    standalone = prompt_batch(tiny_model, [request], standalone=True)["targets"][0].tolist()
    assert plain == tiny_model.answer_ids(request.prompt, "France")
    expected = tiny_model.tokenizer(" France")["input_ids"]  # the tokenizer's defaults: BOS where it adds one
    assert standalone == expected and len(standalone) == len(prefix_tokens(tiny_model.tokenizer)) + len(plain)
    original = weights.state_hash(tiny_model)
    record = editor("ft-l", target_tokens="standalone", steps=3).apply(tiny_model, request)
    assert record.changed_elements() > 0
    record.revert()
    assert weights.state_hash(tiny_model) == original
    with pytest.raises(KelocateError, match="unknown target_tokens"):
        editor("ft-l", target_tokens="both").apply(tiny_model, request)
