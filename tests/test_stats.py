"""kelocate.edit.stats: E[k k^T] of the MLP keys, all layers in one pass, padding masked, cached atomically."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from kelocate.cli import main
from kelocate.edit import stats as st
from kelocate.errors import KelocateError
from kelocate.model import sites

TEXTS = ["SMAP was created in Japan", "the river", "Paris is the capital of France and the city of music",
         "a", "Berlin", "the group plays music in Germany", "Japanese is the language of Japan",
         "the team was created by the group"]  # very different lengths: every batch is padded


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test caches in its own folder, never in ~/.cache."""
    monkeypatch.setenv("KELOCATE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "stats"


@torch.no_grad()
def reference(model, layer: int, texts: list[str], max_length: int = st.MAX_LENGTH):
    """Obviously correct: one text at a time (no padding at all), sum k k^T over its tokens in float64."""
    mom2 = torch.zeros(model.d_mlp, model.d_mlp, dtype=torch.float64)
    total = torch.zeros(model.d_mlp, dtype=torch.float64)
    count = 0
    hook = sites.site("mlp_post", layer)
    for text in texts:
        ids = model.encode(text).ids[:max_length]
        keys = sites.cache_activations(model, ids, [hook])[hook][0].double()  # [pos, d_mlp]
        for k in keys:
            mom2 += torch.outer(k, k)
        total += keys.sum(dim=0)
        count += keys.shape[0]
    return mom2 / count, total / count, count


def assert_matches(result, ref) -> None:
    """float32 keys summed in float64: the batch and the single-text run differ by float32 rounding of the
    keys only (measured: 2e-7 of max |C| on the tiny model, a couple of ulps); 1e-5 of max |C| leaves 50x
    headroom, while a padded position counted (a whole extra k k^T of size ~max |C| / count) or a missed
    token is orders of magnitude above it (counting padding fails these tests, checked)."""
    mom2, mean, count = ref
    assert result.count == count
    bound = 1e-5 * float(mom2.abs().max())
    assert float((result.mom2.double() - mom2).abs().max()) <= bound
    assert float((result.mean.double() - mean).abs().max()) <= 1e-5 * float(mean.abs().max())


class ForwardCounter:
    """Counts forward passes of the model (a hook on the embedding runs once per forward, whatever path)."""

    def __init__(self, model) -> None:
        self.n = 0
        self.handle = model.hf.get_input_embeddings().register_forward_hook(self._count)

    def _count(self, *args) -> None:
        self.n += 1

    def __enter__(self) -> ForwardCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def test_all_layers_in_one_pass_equal_the_per_text_reference(tiny_model):
    with ForwardCounter(tiny_model) as forwards:
        res = st.second_moments(tiny_model, [0, 1, 2], texts=TEXTS, batch_size=3, cache=False)
    assert forwards.n == math.ceil(len(TEXTS) / 3)  # one forward per batch, not batches x layers
    assert list(res) == [0, 1, 2]
    for layer, r in res.items():
        assert r.hook == f"blocks.{layer}.mlp.hook_post" and r.mom2.dtype == torch.float64 and not r.cached
        assert r.mom2.shape == (tiny_model.d_mlp, tiny_model.d_mlp) and r.path is None
        assert_matches(r, reference(tiny_model, layer, TEXTS))
        assert torch.allclose(r.mom2, r.mom2.T)


def test_padding_is_masked_and_batches_do_not_matter(tiny_model):
    one_batch = st.second_moments(tiny_model, [1], texts=TEXTS, batch_size=len(TEXTS), cache=False)[1]
    singles = st.second_moments(tiny_model, [1], texts=TEXTS, batch_size=1, cache=False)[1]
    ref = reference(tiny_model, 1, TEXTS)
    assert one_batch.count == sum(len(tiny_model.encode(t)) for t in TEXTS)  # real tokens only
    assert_matches(one_batch, ref)
    assert_matches(singles, ref)


def test_max_length_truncates_and_float32_is_stored(tiny_model):
    res = st.second_moments(tiny_model, [2], texts=TEXTS, max_length=3, dtype="float32", cache=False)[2]
    assert res.mom2.dtype == torch.float32 and res.mean.dtype == torch.float32
    assert_matches(res, reference(tiny_model, 2, TEXTS, max_length=3))


def test_cache_hit_and_misses(tiny_model, _cache):
    first = st.second_moments(tiny_model, [0, 2], texts=TEXTS)
    assert not any(r.cached for r in first.values())
    assert all(r.path.is_file() and r.path.parent.parent == _cache for r in first.values())
    with ForwardCounter(tiny_model) as forwards:
        again = st.second_moments(tiny_model, [2, 0], texts=TEXTS)
    assert forwards.n == 0 and all(r.cached for r in again.values())
    for layer in (0, 2):
        assert torch.equal(again[layer].mom2, first[layer].mom2) and again[layer].count == first[layer].count
        assert again[layer].source == first[layer].source
    # a new layer beside cached ones: only that layer is computed, still one forward per batch
    with ForwardCounter(tiny_model) as forwards:
        mixed = st.second_moments(tiny_model, [0, 1], texts=TEXTS, batch_size=4)
    assert forwards.n == 2 and mixed[0].cached and not mixed[1].cached
    # any change of the key is a miss: corpus, sample count, max length, dtype
    for kwargs in ({"texts": [*TEXTS[:-1], "another text"]}, {"texts": TEXTS, "n_samples": 5},
                   {"texts": TEXTS, "max_length": 4}, {"texts": TEXTS, "dtype": torch.float32}):
        assert not st.second_moments(tiny_model, [0], **kwargs)[0].cached, kwargs


def test_a_damaged_cache_file_is_a_miss(tiny_model):
    good = st.second_moments(tiny_model, [1], texts=TEXTS)[1]
    data = good.path.read_bytes()
    for damaged in (b"", b"not safetensors", data[: len(data) // 2]):
        good.path.write_bytes(damaged)
        again = st.second_moments(tiny_model, [1], texts=TEXTS)[1]
        assert not again.cached and torch.equal(again.mom2, good.mom2)
        assert st.second_moments(tiny_model, [1], texts=TEXTS)[1].cached  # rewritten whole


def test_corpus_files(tiny_model, tmp_path):
    plain = tmp_path / "corpus.txt"
    plain.write_text("\n".join(TEXTS[:4]) + "\n\n")
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(TEXTS[:4])))
    a = st.second_moments(tiny_model, [0], corpus=plain, cache=False)[0]
    b = st.second_moments(tiny_model, [0], corpus=jsonl, cache=False)[0]
    assert_matches(a, reference(tiny_model, 0, TEXTS[:4]))
    assert torch.equal(a.mom2, b.mom2) and "corpus.txt" in a.source
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(KelocateError, match=r"bad\.jsonl:2: text: missing"):
        st.second_moments(tiny_model, [0], corpus=bad)
    with pytest.raises(KelocateError, match="does not exist"):
        st.second_moments(tiny_model, [0], corpus=tmp_path / "nope.txt")


def test_sampling_keeps_a_seeded_subset(tiny_model):
    c1 = st.text_corpus(tiny_model, TEXTS, n_samples=3, seed=1)
    assert c1.size == 3 and c1.digest == st.text_corpus(tiny_model, TEXTS, n_samples=3, seed=1).digest
    assert c1.digest != st.text_corpus(tiny_model, TEXTS, n_samples=3, seed=2).digest
    assert "3 texts sampled (seed 1)" in c1.source


def test_generated_corpus_is_seeded_and_said_so(tiny_model):
    corpus = st.default_corpus(tiny_model, n_samples=6, max_length=12)
    assert corpus.generated and "generated by the model itself" in corpus.source
    rows = corpus.rows(None)
    assert len(rows) == 6 and all(1 <= len(r) <= 12 for r in rows)
    assert all(torch.equal(a, b) for a, b in zip(rows, corpus.rows(None), strict=True))
    res = st.second_moments(tiny_model, [0], n_samples=6, max_length=12)[0]
    assert "generated" in res.source and res.count == sum(len(r) for r in rows)
    with ForwardCounter(tiny_model) as forwards:  # a hit is found from the recipe, without generating
        assert st.second_moments(tiny_model, [0], n_samples=6, max_length=12)[0].cached
    assert forwards.n == 0


def test_generation_with_the_block_runner_equals_full_forwards(tiny_model, monkeypatch):
    from kelocate.model import stack

    fast = st.generated_corpus(tiny_model, 4, 10, seed=3).rows(None)

    def unavailable(model):
        raise stack.StackUnavailable("test")

    monkeypatch.setattr(stack, "guarded_stack", unavailable)
    slow = st.generated_corpus(tiny_model, 4, 10, seed=3).rows(None)
    assert all(torch.equal(a, b) for a, b in zip(fast, slow, strict=True))


def test_bad_arguments_are_one_line_errors(tiny_model):
    for kwargs, needle in (({"layers": [5]}, "does not exist"), ({"layers": []}, "no layers"),
                           ({"layers": [0], "dtype": "float16"}, "float64 or float32"),
                           ({"layers": [0], "n_samples": 0}, "at least 1"),
                           ({"layers": [0], "batch_size": 0}, "at least 1"),
                           ({"layers": [0], "texts": ["  ", ""]}, "no text")):
        kwargs.setdefault("texts", TEXTS)
        with pytest.raises(KelocateError, match=needle):
            st.second_moments(tiny_model, cache=False, **kwargs)


def test_the_organism_default_corpus_is_its_training_text():
    from kelocate.loading import load_model

    model = load_model()
    corpus = st.default_corpus(model, n_samples=50)
    assert not corpus.generated and "organism training text" in corpus.source and corpus.size == 50


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from kelocate.edit import stats
    from kelocate.loading import load_model

    model_dir, marker = sys.argv[1], Path(sys.argv[2])
    real = stats._save
    calls = []

    def slow_save(tensors, path, metadata):  # the second layer's file: half written, then the writer hangs
        calls.append(path)
        if len(calls) < 2:
            return real(tensors, path, metadata)
        path.write_bytes(b"half a file")
        marker.write_text(str(path))
        time.sleep(600)

    stats._save = slow_save
    stats.second_moments(load_model(model_dir), [0, 1], texts=sys.argv[3:])
""")


def test_a_killed_writer_leaves_no_partial_file(tiny_model, tiny_model_dir, tmp_path, _cache):
    marker = tmp_path / "writing"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tiny_model_dir), str(marker), *TEXTS], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never reached the write"
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    folder = next(_cache.iterdir())
    finals = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    leftovers = [p for p in folder.iterdir() if p.name.startswith(".")]
    assert [p.name[:8] for p in finals] == ["layer000"]  # layer 0 complete, layer 1 never renamed in
    assert [str(p) for p in leftovers] == [marker.read_text()] and leftovers[0].name.endswith(".tmp")
    res = st.second_moments(tiny_model, [0, 1], texts=TEXTS)
    assert res[0].cached and not res[1].cached  # the whole file is used, the missing one computed
    assert_matches(res[1], reference(tiny_model, 1, TEXTS))
    assert leftovers[0].exists()  # a fresh temporary file may be a live writer's: kept ...
    old = time.time() - st.STALE_TMP_SECONDS - 60
    os.utime(leftovers[0], (old, old))
    st.second_moments(tiny_model, [2], texts=TEXTS)
    assert not leftovers[0].exists()  # ... a stale one is removed by the next write


def test_cli_computes_then_hits_the_cache(tiny_model_dir, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS))
    argv = ["stats", "--layers", "0,1", "--model", str(tiny_model_dir), "--corpus", str(corpus)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "layer 0: blocks.0.mlp.hook_post" in out and "layer 1:" in out and "computed" in out
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("layer ")]
    assert len(lines) == 2 and all("cache hit" in line and ".safetensors" in line for line in lines)
    assert main(["stats", "--layers", "all", "--model", str(tiny_model_dir), "--samples", "3",
                 "--max-length", "8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["layer"] for r in data["layers"]] == [0, 1, 2] and data["generated"]
    assert "generated by the model itself" in data["corpus"]


@pytest.mark.parametrize("layers,needle", [("99", "layer 99 does not exist"), ("x", "not a layer list"),
                                           ("3-1", "backwards")])
def test_cli_bad_layers_one_line_exit_2(tiny_model_dir, layers, needle, capsys):
    assert main(["stats", "--layers", layers, "--model", str(tiny_model_dir)]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out


def test_parse_layers():
    from kelocate.commands.common import parse_layers

    assert parse_layers("1,2,3") == [1, 2, 3] and parse_layers("1-4") == [1, 2, 3, 4]
    assert parse_layers("0, 2-3,2") == [0, 2, 3] and parse_layers("all") is None


def test_the_forward_stops_after_the_deepest_layer_and_leaves_no_hooks(tiny_model):
    from kelocate.model.sites import bridge_has_hooks

    calls = []
    handle = tiny_model.hf.model.norm.register_forward_hook(lambda *a: calls.append(1))
    try:
        st.second_moments(tiny_model, [0, 1], texts=TEXTS, batch_size=3, cache=False)
        assert calls == []  # the final norm (after the last layer) never ran
        st.second_moments(tiny_model, [2], texts=TEXTS[:2], batch_size=3, cache=False)
    finally:
        handle.remove()
    assert not bridge_has_hooks(tiny_model.bridge)
