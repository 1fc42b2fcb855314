"""Attention knockout (Geva et al. 2023) through the patching API: masking the scores at
`hook_attn_scores` equals a plain reference that masks the same query/key pairs in HF eager attention."""

from __future__ import annotations

import pytest
import torch

from kelocate.locate.patching import Patch, run_patched


def knockout(query: int, keys: list[int]):
    """An edit for `blocks.L.attn.hook_attn_scores` [batch, head, query, key]: `query` may not read `keys`."""

    def edit(scores: torch.Tensor) -> torch.Tensor:
        scores[..., query, keys] = float("-inf")
        return scores

    return edit


@torch.no_grad()
def reference_knockout(model, prompt: str, layer: int, query: int, keys: list[int]) -> torch.Tensor:
    """Last-position logits from the HF model in eager attention with the (query, key) pairs masked at one layer."""
    hf = model.hf
    ids = model.encode(prompt).ids.reshape(1, -1)
    previous = hf.config._attn_implementation
    hf.config._attn_implementation = "eager"

    def pre(module, args, kwargs):
        mask = kwargs["attention_mask"].clone()
        mask[:, :, query, keys] = torch.finfo(mask.dtype).min
        kwargs["attention_mask"] = mask
        return args, kwargs

    handle = hf.model.layers[layer].self_attn.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        logits = hf(ids, attention_mask=torch.ones_like(ids)).logits
    finally:
        handle.remove()
        hf.config._attn_implementation = previous
    return logits[0, -1]


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_knockout_matches_masked_eager_attention(tiny_model, layer):
    prompt = "the quick brown fox jumps over"
    n = len(tiny_model.encode(prompt).ids)
    keys = [1, 2, 3]
    patch = Patch(f"blocks.{layer}.attn.hook_attn_scores", knockout(n - 1, keys))
    got = run_patched(tiny_model, prompt, [patch])[0, -1]
    want = reference_knockout(tiny_model, prompt, layer, n - 1, keys)
    base = run_patched(tiny_model, prompt)[0, -1]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (got - base).abs().max() > 1e-3  # the knockout changes the logits: the comparison is not vacuous
