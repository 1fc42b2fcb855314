"""The patching API against hand-written TransformerLens hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import PROB_TOL, assert_close, tol
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
    assert_close(logits, ref, "patched logits")
    unpatched = run_patched(model, CORRUPTED)
    assert float((logits - unpatched).abs().max()) > 100 * tol(ref)  # the patch does change the output
    answer = model.answer_ids(CORRUPTED, "Japan")[0]
    prob = run_patched(model, CORRUPTED, [Patch(name, clean[:, 2], positions=2)], answer="Japan")
    assert abs(float(prob[0]) - float(torch.softmax(ref[0, -1].float(), -1)[answer])) <= PROB_TOL


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
    assert_close(got, ref, "batched edit")
    # row 0 untouched: equal to the prompt run alone, up to batch-vs-single rounding (see tolerances.py)
    alone = run_patched(model, CLEAN)[0]
    assert_close(got[0, : alone.shape[0]], alone, "row 0")
    before = model.next_token_probs(CLEAN)
    with patching(model, [Patch(site("attn", 2), 0.0)]) as patched:
        during = patched.next_token_probs(CLEAN)
    assert float((before - during).abs().max()) > 100 * PROB_TOL
    assert torch.equal(model.next_token_probs(CLEAN), before)  # hooks removed on exit: the very same run


def test_padded_batch_answers(model):
    prompts = ["SMAP was created in", CLEAN]
    probs = run_patched(model, prompts, answer=["Japan", "Paris"])
    for prompt, answer, p in zip(prompts, ["Japan", "Paris"], probs, strict=True):
        alone = float(model.next_token_probs(prompt)[model.answer_ids(prompt, answer)[0]])
        assert abs(float(p) - alone) <= PROB_TOL  # padded batch vs single prompt: rounding only


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
    np.testing.assert_allclose(sweep.probs, ref, atol=PROB_TOL)  # batched cells vs single runs
    # patching the last layer's final position with the clean state restores the clean probability
    assert abs(sweep.probs[-1, -1] - sweep.clean_prob) <= PROB_TOL
    assert abs(sweep.probs[0, 0] - sweep.corrupted_prob) <= PROB_TOL  # BOS is identical in both prompts


def test_errors(model):
    with pytest.raises(KelocateError, match="same token length"):
        patch_sweep(model, CLEAN, "Paris was")
    with pytest.raises(KelocateError, match="unknown hook point"):
        cache_activations(model, CLEAN, ["blocks.0.hook_nothing"])
    with pytest.raises(KelocateError):
        site("neurons", 0)
