"""LlamaStack (block-by-block execution with key/value prefixes) against the plain HF forward."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from kelocate.model.stack import KV, LlamaStack


def _model(n_kv_heads: int) -> LlamaForCausalLM:
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=n_kv_heads, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("n_kv_heads", [4, 2])
@torch.no_grad()
def test_full_run_equals_hf(n_kv_heads: int):
    model = _model(n_kv_heads)
    ids = torch.randint(0, 50, (2, 9))
    stack = LlamaStack(model)
    hidden, outs = stack.run(stack.embed(ids))
    ref = model(ids, output_hidden_states=True)
    assert torch.allclose(stack.unembed(hidden), ref.logits, atol=1e-5)
    for layer in range(2):
        assert torch.allclose(outs[layer].hidden, ref.hidden_states[layer + 1], atol=1e-5)
    # block output = input + attn_out + mlp_out, and mlp_out = down_proj(mlp_post)
    first = outs[0]
    assert torch.allclose(first.hidden, stack.embed(ids) + first.attn_out + first.mlp_out, atol=1e-5)
    assert torch.allclose(model.model.layers[0].mlp.down_proj(first.mlp_post), first.mlp_out, atol=1e-6)


@pytest.mark.parametrize("n_kv_heads", [4, 2])
@torch.no_grad()
def test_suffix_on_prefix_and_mid_stack_start(n_kv_heads: int):
    model = _model(n_kv_heads)
    ids = torch.randint(0, 50, (1, 10))
    stack = LlamaStack(model)
    hidden, outs = stack.run(stack.embed(ids))
    cut = 6
    pasts = [o.kv.select(slice(None), cut) for o in outs]
    tail, _ = stack.run(stack.embed(ids[:, cut:]), start=cut, pasts=pasts)
    assert torch.allclose(tail, hidden[:, cut:], atol=1e-5)
    # start at layer 2 from layer 1's output, batch of 3 over a batch-1 prefix
    tail2, _ = stack.run(outs[1].hidden[:, cut:].expand(3, -1, -1), first_layer=2, start=cut, pasts=pasts)
    assert torch.allclose(tail2, hidden[:, cut:].expand(3, -1, -1), atol=1e-5)


@torch.no_grad()
def test_edits_apply_and_past_length_is_checked():
    model = _model(4)
    stack = LlamaStack(model)
    x = stack.embed(torch.randint(0, 50, (1, 5)))
    zeroed = stack.block(0, x, edits={"mlp_post": torch.zeros_like})
    assert torch.count_nonzero(zeroed.mlp_out) == 0
    with pytest.raises(ValueError, match="past covers"):
        stack.block(0, x, start=3, past=KV(torch.zeros(1, 4, 2, 8), torch.zeros(1, 4, 2, 8)))


@pytest.mark.parametrize("n_kv_heads", [4, 2])
@torch.no_grad()
def test_last_only_block_equals_the_full_block_at_the_last_position(n_kv_heads: int):
    model = _model(n_kv_heads)
    stack = LlamaStack(model)
    ids = torch.randint(0, 50, (1, 9))
    _, outs = stack.run(stack.embed(ids))
    cut = 4
    hidden_in = outs[1].hidden[:, cut:].expand(3, -1, -1)
    past = outs[2].kv.select(slice(None), cut)
    full = stack.block(2, hidden_in, cut, past)
    last = stack.block(2, hidden_in, cut, past, last_only=True)
    assert last.hidden.shape == (3, 1, 32)
    assert torch.allclose(last.hidden, full.hidden[:, -1:], atol=1e-6)
    assert torch.allclose(last.kv.k, full.kv.k) and torch.allclose(last.kv.v, full.kv.v)


@pytest.mark.parametrize("n_kv_heads", [4, 2])
@torch.no_grad()
def test_a_past_is_tiled_over_the_batch(n_kv_heads: int):
    """A past of batch b under a batch of k x b rows: row r reads past row r % b (cells x noise samples)."""
    model = _model(n_kv_heads)
    stack = LlamaStack(model)
    samples, tiles, cut = 2, 3, 5
    _, outs = stack.run(stack.embed(torch.randint(0, 50, (samples, 8))))
    past = outs[1].kv.select(slice(None), cut)
    hidden_in = torch.randn(tiles * samples, 3, 32)
    repeated = KV(past.k.repeat(tiles, 1, 1, 1), past.v.repeat(tiles, 1, 1, 1))
    for last_only in (False, True):
        tiled = stack.block(1, hidden_in, cut, past, last_only=last_only)
        plain = stack.block(1, hidden_in, cut, repeated, last_only=last_only)
        assert torch.allclose(tiled.hidden, plain.hidden, atol=1e-6)
    with pytest.raises(ValueError, match="does not divide"):
        stack.block(1, torch.randn(3, 3, 32), cut, past)


@torch.no_grad()
def test_the_block_calls_the_model_modules():
    """Hooks on the HF modules (e.g. neuron scaling on down_proj's input) apply to the block runner too."""
    model = _model(2)
    stack = LlamaStack(model)
    x = stack.embed(torch.randint(0, 50, (2, 6)))
    handle = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    try:
        out = stack.block(0, x)
    finally:
        handle.remove()
    assert torch.count_nonzero(out.mlp_out) == 0 and torch.count_nonzero(stack.block(0, x).mlp_out) > 0


@pytest.mark.parametrize("n_kv_heads", [4, 2])
@torch.no_grad()
def test_a_suffix_run_equals_the_full_run_at_each_rows_own_positions(n_kv_heads: int):
    """Rows of different lengths, each run from its own start above layer 1, over its kept prefix: the final
    hidden states equal the full run's at those positions (right padding never reaches a real position)."""
    from kelocate.model.stack import SuffixRun

    model = _model(n_kv_heads)
    stack = LlamaStack(model)
    ids = torch.randint(0, 50, (3, 11))
    lengths, starts = torch.tensor([11, 7, 9]), torch.tensor([4, 0, 8])
    full, _ = stack.run(stack.embed(ids))
    run = SuffixRun(stack, ids, lengths, starts, first_layer=1)
    own = run.run()
    for r in range(3):
        for i in range(int(lengths[r] - starts[r])):
            assert torch.allclose(own[r, i], full[r, starts[r] + i], atol=1e-5), (r, i)
    # an edit at each row's first own position equals the same edit in the full run at its start
    bump = torch.randn(32)

    def at_start(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :1] + bump, x[:, 1:]], dim=1)

    edited = run.run(lambda layer: {"mlp": at_start} if layer == 1 else None)
    for r in range(3):
        onehot = torch.zeros(1, 11, 1)
        onehot[0, starts[r]] = 1.0
        ref, _ = stack.run(stack.embed(ids[r:r + 1]),
                           edits=lambda layer, o=onehot: {"mlp": lambda x: x + o * bump} if layer == 1 else None)
        n = int(lengths[r] - starts[r])
        assert torch.allclose(edited[r, :n], ref[0, starts[r]:lengths[r]], atol=1e-5)
