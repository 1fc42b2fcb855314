"""Shared fixtures: small thread counts and tiny random Llama models built by the tests themselves."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("KELOCATE_TEST_THREADS") or os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 3-layer random Llama with its own tokenizer, in HF format (built once per session)."""
    from kelocate.testing.random_model import build_random_llama

    return build_random_llama(tmp_path_factory.mktemp("tiny-llama"), n_layers=3, d_model=64, d_mlp=128,
                              n_heads=4, seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """The tiny random Llama loaded through kelocate's model layer."""
    from kelocate.model import load_model

    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def smol():
    """SmolLM2-135M-Instruct, fetched by `kelocate models fetch smollm2` (.ci/run does it). Without it the
    tests that use it skip with the reason, except under KELOCATE_REQUIRE_REAL=1 (CI), where they fail."""
    from kelocate.model.fetch import is_fetched

    if not is_fetched("smollm2"):
        reason = "SmolLM2 is not fetched; run `kelocate models fetch smollm2`"
        if os.environ.get("KELOCATE_REQUIRE_REAL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from kelocate.loading import load_model

    return load_model("smollm2")
