"""The fast paths of editing and evaluation against the plain loops they replace.

- target optimisation: the block runner over cached prefixes (`engine="stack"`) vs a whole bridge forward
  per step (`engine="bridge"`): the same loss at every step and the same deltas, for every site kind an
  editor optimises (ROME's 'mlp', MEMIT's 'hidden', PMET's 'attn' + 'mlp') and both edit tokens;
- decoding: greedy tokens from each cached decoder (the block runner's, `stack_decoding`, the default; HF's
  cache on the plain twin) equal the uncached argmax loop over the bridge token for token, and a sampled loop
  sees the same logits at every step;
- the twin stands in for the bridge only where nothing differs (no hook attached, the same tensors).

Tolerances: two float32 paths that reorder sums differ by ~1e-6 relative per forward (tests/tolerances.py).
Ten Adam steps carry that along without amplifying it much (Adam's step is lr * m / (sqrt(v) + eps),
bounded by lr per component): measured 1e-6 relative on SmolLM2's deltas; 1e-3 relative leaves room for
other CPUs while a wrong position or a missed layer moves the delta by tens of percent.
"""

from __future__ import annotations

import pytest
import torch
from tolerances import assert_close, tol

from kelocate.edit.keys import templates_for
from kelocate.edit.methods.rome import ROME
from kelocate.edit.request import EditRequest
from kelocate.edit.target import optimize_target
from kelocate.model import sampling
from kelocate.model.sites import Patch, bridge_has_hooks, patching, site
from kelocate.model.stack import plain_paths
from kelocate.model.stack_decoding import StackDecoder, stack_decoding_step
from kelocate.model.twin import decoding_step, trusted_twin

CACHED_DECODERS = {"stack": stack_decoding_step, "twin": decoding_step}

DELTA_REL = 1e-3


@pytest.fixture(scope="module")
def gqa_model(tmp_path_factory):
    """A 4-layer random Llama with grouped-query attention (4 heads over 2 key/value heads), as SmolLM2's."""
    from kelocate.loading import load_model
    from kelocate.testing.random_model import build_random_llama

    return load_model(build_random_llama(tmp_path_factory.mktemp("gqa"), n_layers=4, d_model=64, d_mlp=128,
                                         n_heads=4, n_kv_heads=2, seed=3))


def _organism_request(model) -> EditRequest:
    from kelocate.organism import world_file
    from kelocate.organism.datasets import organism_cases
    from kelocate.organism.world import load_world

    (case,) = organism_cases(model, load_world(world_file(model.path)), n=1)
    return case.request


def _compare_engines(model, request: EditRequest, layer: int, kinds: tuple[str, ...], token: str) -> None:
    hp = dict(ROME().hparams(model), loss_stop=0.0, v_num_grad_steps=8, token=token)
    templates = templates_for(model, hp)
    plain = optimize_target(model, request, layer, kinds, templates, hp, engine="bridge")
    fast = optimize_target(model, request, layer, kinds, templates, hp, engine="stack")
    assert (plain.engine, fast.engine) == ("bridge", "stack")
    assert plain.steps == fast.steps == 8
    for a, b in zip(plain.losses, fast.losses, strict=True):
        assert abs(a - b) <= tol(a), (plain.losses, fast.losses)
    for kind in kinds:
        assert_close(fast.initial[kind], plain.initial[kind], f"{kind} v_init")
        gap = float((fast.deltas[kind] - plain.deltas[kind]).norm() / plain.deltas[kind].norm())
        assert gap <= DELTA_REL, f"{kind} delta differs by {gap:.3g} relative"


@pytest.mark.parametrize("kinds", [("mlp",), ("hidden",), ("attn", "mlp")])
@pytest.mark.parametrize("token", ["last_subject", "last"])
def test_target_engines_agree_on_the_organism(organism, kinds, token):
    _compare_engines(organism, _organism_request(organism), 1, kinds, token)


def test_target_engines_agree_with_grouped_query_attention(gqa_model):
    request = EditRequest(prompt="alpha beta gamma delta epsilon", subject="beta gamma", target_new="zeta eta")
    _compare_engines(gqa_model, request, 2, ("mlp",), "last_subject")
    _compare_engines(gqa_model, request, 0, ("attn", "mlp"), "last_subject")


def test_target_engines_agree_on_smollm2(smol):
    request = EditRequest(prompt="The Eiffel Tower is located in the city of", subject="Eiffel Tower",
                          target_new="Rome")
    _compare_engines(smol, request, 4, ("mlp",), "last_subject")


def test_a_users_hook_sends_the_optimisation_through_the_bridge(organism):
    hp = dict(ROME().hparams(organism), v_num_grad_steps=2)
    request = _organism_request(organism)
    templates = templates_for(organism, hp)
    assert optimize_target(organism, request, 1, ("mlp",), templates, hp).engine == "stack"
    with patching(organism, [Patch(site("attn", 0), lambda x: x)]):
        assert optimize_target(organism, request, 1, ("mlp",), templates, hp).engine == "bridge"
    with plain_paths():  # the reference loops on request
        assert optimize_target(organism, request, 1, ("mlp",), templates, hp).engine == "bridge"
        assert trusted_twin(organism) is None
    assert trusted_twin(organism) is not None


# ---------------------------------------------------------------------- decoding
def _uncached(model):
    """The plain loop's step: a whole bridge forward over everything so far."""
    def step(current: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.bridge(current)[:, -1]
    return step


@pytest.mark.parametrize("prompt", ["SMAP was created in", "The capital of", "Ana"])
def test_cached_greedy_decoding_equals_the_uncached_argmax_loop(organism, prompt):
    ids = organism.encode(prompt).ids[None]
    cached = sampling.sample(organism, ids, 60, greedy=True)
    plain = sampling.sample(organism, ids, 60, greedy=True, step=_uncached(organism))
    assert torch.equal(cached, plain)
    text = organism.tokenizer.decode(cached[0, ids.shape[1]:].tolist(), skip_special_tokens=True)
    assert organism.generate(prompt, 60, stop_at_eos=False) == text


@pytest.mark.parametrize("decoder", CACHED_DECODERS)
def test_cached_sampling_sees_the_uncached_logits_at_every_step(gqa_model, decoder):
    ids = gqa_model.encode("alpha beta").ids[None].repeat(3, 1)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    cached_step = CACHED_DECODERS[decoder](gqa_model)

    def both(current: torch.Tensor) -> torch.Tensor:
        mine = cached_step(current)
        seen.append((mine, _uncached(gqa_model)(current)))
        return mine

    sampling.sample(gqa_model, ids, 30, top_k=5, generator=torch.Generator().manual_seed(0), step=both)
    assert len(seen) == 30
    for mine, reference in seen:
        assert_close(mine, reference, "next-token logits")


@pytest.mark.parametrize("decoder", CACHED_DECODERS)
def test_each_cached_decoder_equals_the_uncached_loop_past_its_first_buffers(gqa_model, decoder):
    """A batch of two rows, 150 tokens: the block runner's buffers (128 positions at first) grow twice."""
    ids = gqa_model.encode("alpha beta gamma").ids[None].repeat(2, 1)
    cached = sampling.sample(gqa_model, ids, 150, greedy=True, step=CACHED_DECODERS[decoder](gqa_model))
    assert torch.equal(cached, sampling.sample(gqa_model, ids, 150, greedy=True, step=_uncached(gqa_model)))


def test_the_default_decoder_is_the_block_runners_where_it_stands_in(gqa_model):
    assert isinstance(sampling.default_step(gqa_model), StackDecoder)
    with plain_paths():  # the plain loop on request: no cache at all
        step = sampling.default_step(gqa_model)
        assert not isinstance(step, StackDecoder) and stack_decoding_step(gqa_model) is None
        assert decoding_step(gqa_model) is None
    with patching(gqa_model, [Patch(site("mlp", 1), 0.0)]):  # a user's patch must apply: the bridge decodes
        assert stack_decoding_step(gqa_model) is None and decoding_step(gqa_model) is None
    ids = gqa_model.encode("alpha beta").ids[None]
    before = sampling.sample(gqa_model, ids, 20, greedy=True)
    weight = gqa_model.hf.model.layers[1].mlp.down_proj.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(-3.0)  # an edit in place: the next loop decodes the edited model
    try:
        edited = sampling.sample(gqa_model, ids, 20, greedy=True)
        assert torch.equal(edited, sampling.sample(gqa_model, ids, 20, greedy=True, step=_uncached(gqa_model)))
        assert not torch.equal(edited, before)
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_cached_greedy_decoding_on_smollm2(smol):
    for prompt in ["The Eiffel Tower is located in the city of", "Danielle Darrieux's mother tongue is"]:
        ids = smol.encode(prompt).ids[None]
        cached = sampling.sample(smol, ids, 100, greedy=True)
        assert torch.equal(cached, sampling.sample(smol, ids, 100, greedy=True, step=_uncached(smol)))


# ---------------------------------------------------------------------- when the twin stands in
@torch.no_grad()
def test_the_twin_stands_in_only_without_hooks_and_with_the_same_tensors(gqa_model):
    ids, mask = gqa_model.batch_ids(["alpha beta gamma", "delta"])
    assert trusted_twin(gqa_model) is not None
    assert_close(gqa_model.logits(ids, mask)[mask.bool()], gqa_model.bridge(ids, attention_mask=mask)[mask.bool()])
    with patching(gqa_model, [Patch(site("mlp", 1), 0.0)]):
        assert bridge_has_hooks(gqa_model.bridge)
        assert trusted_twin(gqa_model) is None
        zeroed = gqa_model.logits(ids, mask)  # the patch applies: the bridge ran
    assert not torch.allclose(zeroed, gqa_model.logits(ids, mask))
    handle = gqa_model.hf.model.layers[0].mlp.register_forward_hook(lambda *args: None)
    try:
        assert trusted_twin(gqa_model) is None  # a PyTorch hook on a wrapped HF module counts too
    finally:
        handle.remove()
    before = trusted_twin(gqa_model)
    weight = gqa_model.hf.model.layers[0].mlp.down_proj.weight
    with torch.no_grad():
        weight.add_(0.5)  # an edit in place: the same twin sees it
    try:
        assert trusted_twin(gqa_model) is before
        assert_close(gqa_model.logits(ids, mask)[mask.bool()],
                     gqa_model.bridge(ids, attention_mask=mask)[mask.bool()])
    finally:
        with torch.no_grad():
            weight.sub_(0.5)


def test_an_edit_record_times_its_phases(organism):
    from kelocate import timing

    request = _organism_request(organism)
    with timing.collecting() as outer:
        record = ROME(v_num_grad_steps=3, mom2_adjustment=False).apply(organism, request, layers=[1])
    record.revert()
    for name in ("templates", "keys", "target", "update"):
        assert record.timings[f"{name}_s"] >= 0.0 and outer[name] == pytest.approx(record.timings[f"{name}_s"],
                                                                                  abs=1e-3)
    assert sum(outer.values()) <= record.timings["edit_s"] + 1e-3


def test_the_bridges_own_wiring_is_not_a_hook(organism):
    with torch.no_grad():
        organism.bridge(organism.encode("SMAP").ids[None])  # TransformerLens wires its capture hooks here
    assert not bridge_has_hooks(organism.bridge)
