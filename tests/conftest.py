"""Shared fixtures: small thread counts, a cache folder of the test session's own, and tiny random Llama models
built by the tests themselves."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("KELOCATE_TEST_THREADS") or os.environ["OMP_NUM_THREADS"]))


def _fetched_models_dir() -> Path:
    """Where `kelocate models fetch` put real models before the tests moved the cache (not created here)."""
    if os.environ.get("KELOCATE_MODELS"):
        return Path(os.environ["KELOCATE_MODELS"]).expanduser()
    return Path(os.environ.get("KELOCATE_CACHE") or Path.home() / ".cache" / "kelocate").expanduser() / "models"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test, and every fixture of any scope, caches in a folder of this test session, never in the
    user's `~/.cache/kelocate` (noise sigmas, key statistics, organism exports, study trainings). Session
    scope, so that module- and session-scoped fixtures, which are set up before a test's own fixtures, are
    covered too; a test that needs an empty cache of its own sets `KELOCATE_CACHE` itself. Fetched real
    models stay where they are: `KELOCATE_MODELS` points at them, so the `smol` fixture still finds SmolLM2."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KELOCATE_MODELS", str(_fetched_models_dir()))
        patch.setenv("KELOCATE_CACHE", str(tmp_path_factory.mktemp("kelocate-cache")))
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 3-layer random Llama with its own tokenizer, in HF format (built once per session)."""
    from kelocate.testing.random_model import build_random_llama

    return build_random_llama(tmp_path_factory.mktemp("tiny-llama"), n_layers=3, d_model=64, d_mlp=128,
                              n_heads=4, seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """The tiny random Llama loaded through kelocate's model layer."""
    from kelocate.loading import load_model

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


@pytest.fixture(scope="session")
def organism():
    """The shipped organism (`kelocate.load_model()`), loaded once per session. It ships inside the package,
    so a missing checkpoint fails the tests that use it, never skips them."""
    from kelocate.organism import checkpoint_dir

    if not (checkpoint_dir() / "config.json").is_file():
        pytest.fail(f"the shipped organism checkpoint is missing from {checkpoint_dir()}")
    from kelocate import load_model

    return load_model()
