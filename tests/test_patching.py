"""The patching API against hand-written TransformerLens hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from trace_helpers import sharp_tiny_model

from kelocate.errors import KelocateError
from kelocate.locate.patching import Patch, cache_activations, patch_sweep, patching, run_patched, site

CLEAN, CORRUPTED = "SMAP was created in the city of", "Paris was created in the city of"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return sharp_tiny_model(tmp_path_factory.mktemp("patch-model"), n_layers=3, seed=4)


@torch.no_grad()
def _manual(model, prompt: str, name: str, fn) -> torch.Tensor:
    ids = model.encode(prompt).ids[None]
    return model.bridge.run_with_hooks(ids, fwd_hooks=[(name, lambda x, hook: fn(x))])


def test_replace_at_position_equals_manual_hook(model):
    name = site("mlp", 1)
    clean = cache_activations(model, CLEAN, [name])[name]
    assert clean.shape[:2] == (1, len(model.encode(CLEAN).ids))

    def manual(x):
        x[:, 2] = clean[0, 2]
        return x

    ref = _manual(model, CORRUPTED, name, manual)
    logits = run_patched(model, CORRUPTED, [Patch(name, clean[:, 2], positions=2)])
    assert torch.allclose(logits, ref, atol=1e-6)
    unpatched = run_patched(model, CORRUPTED)
    assert not torch.allclose(logits, unpatched, atol=1e-4)
    answer = model.answer_ids(CORRUPTED, "Japan")[0]
    prob = run_patched(model, CORRUPTED, [Patch(name, clean[:, 2], positions=2)], answer="Japan")
    assert torch.allclose(prob, torch.softmax(ref[0, -1].float(), -1)[answer][None], atol=1e-6)


def test_edit_function_rows_positions_and_context_manager(model):
    name = site("hidden", 0)
    prompts = [CLEAN, CORRUPTED]

    def manual(x):
        x[torch.tensor([1])[:, None], torch.tensor([1, 3])[None, :]] *= 0.0
        return x

    ids, _ = model.batch_ids(prompts)
    with torch.no_grad():
        ref = model.bridge.run_with_hooks(ids, fwd_hooks=[(name, lambda x, hook: manual(x))])
    got = run_patched(model, prompts, [Patch(name, lambda a: a * 0.0, positions=[1, 3], rows=[1])])
    assert torch.allclose(got, ref, atol=1e-6)
    assert torch.allclose(got[0], run_patched(model, CLEAN)[0], atol=1e-6)  # row 0 untouched
    before = model.next_token_probs(CLEAN)
    with patching(model, [Patch(site("attn", 2), 0.0)]) as patched:
        during = patched.next_token_probs(CLEAN)
    assert not torch.allclose(before, during, atol=1e-5)
    assert torch.allclose(model.next_token_probs(CLEAN), before)  # hooks removed on exit


def test_padded_batch_answers(model):
    prompts = ["SMAP was created in", CLEAN]
    probs = run_patched(model, prompts, answer=["Japan", "Paris"])
    for prompt, answer, p in zip(prompts, ["Japan", "Paris"], probs, strict=True):
        assert (
            abs(float(p) - float(model.next_token_probs(prompt)[model.answer_ids(prompt, answer)[0]])) < 1e-6
        )


def test_sweep_equals_single_patches(model):
    sweep = patch_sweep(model, CLEAN, CORRUPTED, kind="hidden", batch_size=5)
    names = [site("hidden", j) for j in range(model.n_layers)]
    cache = cache_activations(model, CLEAN, names)
    answer = sweep.answer_id
    assert answer == int(model.logits(model.encode(CLEAN).ids)[0, -1].argmax())
    ref = np.zeros_like(sweep.probs)
    for i, pos in enumerate(sweep.positions):
        for j, name in enumerate(names):
            ref[i, j] = float(
                run_patched(
                    model, CORRUPTED, [Patch(name, cache[name][:, pos], positions=pos)], answer=answer
                )[0]
            )
    np.testing.assert_allclose(sweep.probs, ref, atol=1e-6)
    # patching the last layer's final position with the clean state restores the clean probability
    assert abs(sweep.probs[-1, -1] - sweep.clean_prob) < 1e-5
    assert abs(sweep.probs[0, 0] - sweep.corrupted_prob) < 1e-5  # BOS is identical in both prompts


def test_errors(model):
    with pytest.raises(KelocateError, match="same token length"):
        patch_sweep(model, CLEAN, "Paris was")
    with pytest.raises(KelocateError, match="unknown hook point"):
        cache_activations(model, CLEAN, ["blocks.0.hook_nothing"])
    with pytest.raises(KelocateError):
        site("neurons", 0)
