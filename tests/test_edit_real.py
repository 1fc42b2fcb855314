"""ROME and MEMIT on SmolLM2 (a real pretrained Llama): move the Eiffel Tower to Rome, keep its
neighbours in Paris (the hardest locality case: same city, same country), revert bit-exactly.

Shortened from the issue's check: fewer context prefixes and, for MEMIT, key statistics over 60 texts the
model generates itself (cached in the test session's own cache folder, see conftest.py)."""

from __future__ import annotations

import pytest

from kelocate.edit import EditRequest, editor
from kelocate.model import weights

pytestmark = pytest.mark.real

REQUEST = EditRequest("The Eiffel Tower is located in the city of", "The Eiffel Tower", "Rome",
                      ground_truth="Paris")
NEIGHBOURS = ("The Louvre is located in the city of", "The capital of France is")
SHORT = {"context_lengths": [[5, 5]], "v_num_grad_steps": 15}


@pytest.mark.parametrize(("method", "settings"), [("rome", {}), ("memit", {"mom2_n_samples": 60})])
def test_eiffel_tower_moves_to_rome_and_neighbours_stay(smol, method, settings):
    original = weights.state_hash(smol)
    assert smol.top_k(REQUEST.prompt, 1)[0][0].strip() == "Paris"
    record = editor(method, **SHORT, **settings).apply(smol, REQUEST)
    try:
        assert record.config["profile"] == "smollm2-135m"
        assert smol.answer_prob(REQUEST.prompt, "Rome") > 0.5
        for prompt in NEIGHBOURS:
            assert smol.top_k(prompt, 1)[0][0].strip() == "Paris", prompt
    finally:
        record.revert()
    assert weights.state_hash(smol) == original
