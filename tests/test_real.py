"""A real pretrained Llama: SmolLM2-135M-Instruct (30 layers, grouped-query attention 9/3, tied embeddings),
fetched by `kelocate models fetch smollm2` (.ci/run does it). Without it these tests skip with the reason,
except where KELOCATE_REQUIRE_REAL=1 (CI), where a missing model fails them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import PROB_TOL

from kelocate.model.fetch import gguf_path

pytestmark = pytest.mark.real

EIFFEL = "The Eiffel Tower is located in the city of"


def test_predicts_paris_without_a_forced_bos(smol):
    assert smol.top_k("The capital of France is", 1)[0][0] == " Paris"
    assert smol.encode("The capital of France is").ids.tolist() == smol.tokenizer("The capital of France is")[
        "input_ids"]
    assert smol.encoding == "tokenizer default (no prefix token)"
    # forcing the tokenizer's bos_token in front (what kelocate used to do) costs SmolLM2 a lot
    forced = torch.tensor([smol.tokenizer.bos_token_id, *smol.encode(EIFFEL).ids.tolist()])
    paris = smol.answer_ids(EIFFEL, "Paris")[0]
    p_forced = float(torch.softmax(smol.logits(forced)[0, -1].float(), -1)[paris])
    assert smol.answer_prob(EIFFEL, "Paris") > 0.6 > 0.4 > p_forced


def test_subject_span_and_readable_labels(smol):
    labels = smol.tokens(EIFFEL)
    assert labels[:4] == ["The", "␣E", "iffel", "␣Tower"]
    assert not any("Ġ" in s for s in labels)
    assert smol.subject_span(EIFFEL, "Eiffel Tower") == (1, 4)
    assert smol.subject_span(EIFFEL, "Tower") == (3, 4)


def test_fast_engine_equals_the_oracle(smol):
    """All three kinds, 3 samples, 10-token prompt on the 30-layer GQA model; the rows of the last subject
    token and the last token (every cell takes the oracle about ten minutes on 2 cores)."""
    from kelocate.locate.causal_trace import trace

    args = {"subject": "Eiffel Tower", "kinds": "all", "samples": 3, "tokens": ["last_subject", "last"]}
    fast = trace(smol, EIFFEL, engine="fast", **args)
    oracle = trace(smol, EIFFEL, engine="oracle", **args)
    assert fast.config["engine"] == "fast" and len(fast.tokens) == 10
    assert fast.clean_score == pytest.approx(oracle.clean_score, abs=PROB_TOL)
    for kind in ("hidden", "mlp", "attn"):
        # block runner vs bridge over 30 layers: rounding only (see tolerances.py)
        np.testing.assert_allclose(fast.grids[kind], oracle.grids[kind], atol=PROB_TOL, rtol=0, err_msg=kind)


def test_patching_on_the_real_model(smol):
    from kelocate.model.sites import Patch, cache_activations, patching, run_patched, site

    prompt = "The capital of Germany is"
    before = float(run_patched(smol, prompt, answer="Berlin")[0])
    with patching(smol, [Patch(site("mlp", 0), 0.0, positions=[3])]):  # ' Germany''s layer-0 MLP output
        knocked = float(run_patched(smol, prompt, answer="Berlin")[0])
    assert before > 0.5 and knocked < before / 2
    clean = cache_activations(smol, prompt, [site("mlp", 0)])[site("mlp", 0)]
    restored = run_patched(smol, prompt, [Patch(site("mlp", 0), clean[:, 3], positions=3)], answer="Berlin")
    assert float(restored[0]) == pytest.approx(before, abs=PROB_TOL)


def test_gguf_file_loads_through_the_cli(smol, capsys):
    """`--model file.gguf`: transformers dequantises the file on load; the top tokens equal the converted
    folder's (the same float32 weights through the same code path)."""
    import json

    from kelocate.cli import main

    assert main(["predict", "The capital of France is", "--model", str(gguf_path("smollm2")), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["top_k"]
    want = smol.top_k("The capital of France is", len(rows))
    assert [r["token"] for r in rows] == [t for t, _ in want]
    assert [r["prob"] for r in rows] == pytest.approx([p for _, p in want], abs=1e-6)


def test_trace_cli_shows_readable_tokens_and_located_layers(smol, tmp_path, capsys):
    from kelocate.cli import main

    code = main(["trace", EIFFEL, "--model", "smollm2", "--kind", "mlp", "--samples", "2",
                 "--out", str(tmp_path), "--format", "png"])
    out = capsys.readouterr().out
    assert code == 0
    assert "␣Tower" in out and "Ġ" not in out
    assert "located" in out.lower() and "Eiffel Tower" in out
