"""Causal tracing: the fast engine against the per-cell oracle, noise, subjects, results, averages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from trace_helpers import sharp_tiny_model

from kelocate.data.facts import Fact, file_facts
from kelocate.errors import KelocateError, SubjectNotFoundError
from kelocate.locate.causal_trace.average import average_indirect_effect, token_groups
from kelocate.locate.causal_trace.engine import work_units
from kelocate.locate.causal_trace.noise import NoiseSpec, draw_noise, embedding_sigma, parse_noise
from kelocate.locate.causal_trace.problem import default_window, window_range
from kelocate.locate.causal_trace.result import TraceResult
from kelocate.locate.causal_trace.subject import capitalised_run, infer_subject, longest_entity
from kelocate.locate.causal_trace.tracing import TraceSettings, parse_kinds, parse_severed, trace
from kelocate.locate.patching import Patch, cache_activations, run_patched, site

TOL = 2e-6  # probabilities; engine and oracle differ only by float32 summation order


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return sharp_tiny_model(tmp_path_factory.mktemp("trace-model"))


@pytest.fixture(scope="module")
def gqa_model(tmp_path_factory):
    return sharp_tiny_model(tmp_path_factory.mktemp("trace-gqa"), n_layers=3, seed=5, kv_heads=2)


def _assert_same(fast: TraceResult, ref: TraceResult) -> None:
    assert fast.grids.keys() == ref.grids.keys()
    assert abs(fast.clean_score - ref.clean_score) < TOL
    assert abs(fast.corrupted_score - ref.corrupted_score) < TOL
    for key in fast.grids:
        np.testing.assert_allclose(fast.grids[key], ref.grids[key], rtol=0, atol=TOL, err_msg=key)


CASES = [  # (prompt, subject): subject at position 1, mid-prompt (two tokens), at the very end
    ("SMAP was created in the city of", "SMAP"),
    ("the language of Japan Japanese is", "Japan Japanese"),
    ("the music of Paris", "Paris"),
]


@pytest.mark.parametrize(("prompt", "subject"), CASES)
def test_fast_engine_equals_oracle(model, prompt, subject):
    opts = dict(kinds="all", severed="mlp,attn", window=3, samples=4, seed=7)
    fast = trace(model, prompt, subject, **opts)
    ref = trace(model, prompt, subject, engine="oracle", **opts)
    _assert_same(fast, ref)
    assert fast.config["engine"] == "fast" and ref.config["engine"] == "oracle"
    # not vacuous: restoring changes the answer's probability a lot somewhere
    assert max(float(np.abs(fast.indirect_effect(k)).max()) for k in fast.kinds) > 0.05


@pytest.mark.parametrize(
    "options",
    [
        dict(window=1),
        dict(window=10),
        dict(replace=True, noise="uniform:2sigma"),
        dict(noise=0.5, answer="Japan"),
    ],
)
def test_fast_engine_equals_oracle_options(model, options):
    prompt, subject = "SMAP was created in Japan the city of", "SMAP was"
    fast = trace(model, prompt, subject, samples=3, severed="mlp", **options)
    _assert_same(fast, trace(model, prompt, subject, samples=3, severed="mlp", engine="oracle", **options))


def test_per_cell_reference_and_gqa(model, gqa_model):
    prompt, subject = "the capital of France is Paris in", "France"
    opts = dict(samples=3, window=2, severed="attn")
    _assert_same(
        trace(model, prompt, subject, engine="per_cell", **opts),
        trace(model, prompt, subject, engine="oracle", **opts),
    )
    _assert_same(
        trace(gqa_model, prompt, subject, **opts), trace(gqa_model, prompt, subject, engine="oracle", **opts)
    )


def test_restricted_rows_equal_the_full_grid(model):
    """`tokens=` computes only the named rows (what a one-row locator needs), with the same numbers."""
    prompt, subject = CASES[0]
    opts = dict(kinds="all", severed="mlp", samples=3, window=2)
    full = trace(model, prompt, subject, **opts)
    for engine in ("fast", "oracle"):
        part = trace(model, prompt, subject, tokens=("last_subject", -1, 0), engine=engine, **opts)
        rows = [full.token_index("last_subject"), len(full.tokens) - 1, 0]
        assert part.config["rows"] == rows
        for key in full.grids:
            np.testing.assert_allclose(part.grids[key][rows], full.grids[key][rows], atol=TOL, err_msg=key)
            left_out = [t for t in range(len(full.tokens)) if t not in rows]
            assert np.isnan(part.grids[key][left_out]).all()
        assert part.top_layers("mlp", 2) == full.top_layers("mlp", 2)
    with pytest.raises(KelocateError, match="unknown token"):
        trace(model, prompt, subject, tokens=("middle",), samples=2)


def test_small_batches_do_not_change_results(model):
    prompt, subject = CASES[1]
    big = trace(model, prompt, subject, samples=3)
    small = trace(model, prompt, subject, samples=3, max_tokens=7)
    for key in big.grids:
        np.testing.assert_allclose(big.grids[key], small.grids[key], atol=TOL)


@pytest.mark.parametrize("window", [3, 10])
def test_forked_windows_equal_the_oracle_in_any_batching(model, window):
    """Windows clipped at layer 0 share their first layers (the engine forks them); any batch split agrees."""
    prompt, subject = CASES[0]
    opts = dict(kinds="mlp,attn", samples=2, window=window, tokens=("first_subject", "last"), single_layer=False)
    ref = trace(model, prompt, subject, engine="oracle", **opts)
    for max_tokens in (7, 40, 16384):  # one cell per batch (every fork undone), some forks split, one batch
        _assert_same(trace(model, prompt, subject, max_tokens=max_tokens, **opts), ref)


def test_work_units_count_rows_and_logits():
    base = dict(n_tokens=11, subject_start=1, n_layers=30, samples=10, kinds=("hidden", "mlp", "attn"), window=10)
    plain = work_units(**base)
    with_logits = work_units(**base, vocab_units=8.0)
    assert with_logits["oracle"] == pytest.approx(plain["oracle"] * (30 + 8) / 30)
    assert with_logits["engine"] > plain["engine"] and with_logits["bound"] > plain["bound"]
    part = work_units(**base, vocab_units=8.0, rows=(1, 10))
    assert part["oracle"] == pytest.approx(with_logits["oracle"] * 2 / 11) and part["engine"] < with_logits["engine"]
    # the last token has one position left: the engine's ratio there is far above the first subject token's
    assert work_units(**base, rows=(10,))["engine_speedup"] > 3 * work_units(**base, rows=(1,))["engine_speedup"]


def test_noise_is_paired_and_seeded(model):
    prompt, subject = CASES[0]
    a = trace(model, prompt, subject, samples=3, seed=11)
    b = trace(model, prompt, subject, samples=3, seed=11)
    c = trace(model, prompt, subject, samples=3, seed=12)
    for key in a.grids:
        assert np.array_equal(a.grids[key], b.grids[key])
    assert a.corrupted_score == b.corrupted_score != c.corrupted_score
    assert torch.equal(draw_noise(2, 3, 4, "gaussian", 5), draw_noise(2, 3, 4, "gaussian", 5))
    uniform = draw_noise(50, 2, 8, "uniform", 5)
    assert uniform.abs().max() <= 1.0 and uniform.min() < -0.5
    # cells before the subject see identical clean and corrupted states: exactly the corrupted score
    assert np.all(a.grids["hidden"][: a.subject_span[0]] == a.corrupted_score)


def test_restoring_everything_gives_the_clean_score(model):
    prompt, subject = CASES[1]
    result = trace(model, prompt, subject, samples=4, seed=3)
    n_tokens, n_layers = len(result.tokens), model.n_layers
    # the last token's final hidden state decides the output: restoring it restores the clean score
    assert abs(result.grids["hidden"][-1, -1] - result.clean_score) < TOL
    # restoring every position of one layer in all corrupted rows gives the clean score back
    ids = model.encode(prompt).ids
    start, end = result.subject_span
    noise = draw_noise(4, end - start, model.d_model, "gaussian", 3) * result.config["noise_scale"]
    corrupt = Patch(site("embed"), lambda x: x + noise.to(x), positions=slice(start, end))
    names = [site("hidden", layer) for layer in range(n_layers)]
    clean_cache = cache_activations(model, ids, names)
    for layer, name in enumerate(names):
        restored = run_patched(
            model,
            ids[None].repeat(4, 1),
            [corrupt, Patch(name, clean_cache[name])],
            answer=[result.answer_id] * 4,
        )
        assert abs(float(restored.mean()) - result.clean_score) < TOL, layer
    corrupted = run_patched(model, ids[None].repeat(4, 1), [corrupt], answer=[result.answer_id] * 4)
    assert abs(float(corrupted.mean()) - result.corrupted_score) < TOL
    assert n_tokens == len(ids)


def test_subject_span_errors_and_inference(model, tmp_path):
    with pytest.raises(SubjectNotFoundError, match="--subject"):
        trace(model, "SMAP was created in", "Paris", samples=2)
    with pytest.raises(SubjectNotFoundError):
        trace(model, "SMAP was created in", "  ", samples=2)
    with pytest.raises(SubjectNotFoundError, match="--subject"):
        infer_subject(model, "was created in the")
    inferred = trace(model, "the music of Paris is", samples=2, kinds="hidden")
    assert inferred.subject == "Paris" and inferred.config["subject_source"] == "capitalised words"
    assert any("subject inferred" in n for n in inferred.notes)
    assert capitalised_run("The Eiffel Tower is in") == "Eiffel Tower"
    assert capitalised_run("Where was SMAP created") == "SMAP"
    assert capitalised_run("University of Tokyo is in") == "University of Tokyo"
    assert longest_entity("SMAP was created in", ["SMA", "SMAP", "Japan", "SMAP was"]) == "SMAP was"
    assert longest_entity("SMAPX was created", ["SMAP"]) is None


def test_answer_handling(model):
    prompt, subject = CASES[0]
    multi = trace(model, prompt, subject, answer="Japanese language", samples=2, kinds="hidden")
    assert any("tokens; tracing its first token" in n for n in multi.notes)
    assert multi.answer_id == model.answer_ids(prompt, "Japanese language")[0]
    top = trace(model, prompt, subject, samples=2, kinds="hidden")
    assert top.answer_id == int(model.logits(model.encode(prompt).ids)[0, -1].argmax())
    assert abs(top.clean_score - float(model.next_token_probs(prompt)[top.answer_id])) < TOL


def test_result_roundtrip_and_top_layers(model, tmp_path):
    prompt, subject = CASES[1]
    result = trace(model, prompt, subject, samples=2, severed="mlp")
    json_path, npz_path = result.save(tmp_path / "out" / "r")
    assert json_path.name == "r.json" and npz_path.is_file()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    back = TraceResult.load(json_path)
    assert back.tokens == result.tokens and back.subject_span == result.subject_span
    assert back.config == result.config and back.answer == result.answer
    for key in result.grids:
        np.testing.assert_array_equal(back.grids[key], result.grids[key])
    row = result.grids["mlp"][result.subject_span[1] - 1]
    top = result.top_layers("mlp", 2)
    assert top[0] == int(np.argmax(row)) and len(top) == 2
    assert result.top_layers("hidden", 1, token="last") == [int(np.argmax(result.grids["hidden"][-1]))]
    location = result.to_location("mlp")
    assert location.top_layers(1) == frozenset(top[:1])
    summary = json.loads(json_path.read_text())
    assert summary["config"]["window"] == result.config["window"]
    assert summary["located"]["mlp"]["last_subject"]["layers"][0] == top[0]
    with pytest.raises(KelocateError):
        result.top_layers("nope")
    with pytest.raises(KelocateError):
        result.token_index("middle")
    with pytest.raises(KelocateError):
        TraceResult.load(tmp_path / "missing.json")


def test_options_parsing_and_window_rule(model):
    assert parse_kinds("all") == ("hidden", "mlp", "attn") and parse_kinds("mlp,hidden") == ("mlp", "hidden")
    assert parse_severed(None) == () and parse_severed("attn") == ("attn",)
    for bad in (
        lambda: parse_kinds("neurons"),
        lambda: parse_severed("hidden"),
        lambda: parse_noise("abc"),
        lambda: parse_noise("-1"),
        lambda: parse_noise("0sigma"),
        lambda: trace(model, "SMAP was", "SMAP", samples=0),
    ):
        with pytest.raises(KelocateError):
            bad()
    # each spec against the fields written out by hand
    expected = {
        "3sigma": NoiseSpec("gaussian", 3.0, True),
        "2.5sigma": NoiseSpec("gaussian", 2.5, True),
        "sigma": NoiseSpec("gaussian", 1.0, True),
        0.1: NoiseSpec("gaussian", 0.1, False),
        "0.1": NoiseSpec("gaussian", 0.1, False),
        "uniform": NoiseSpec("uniform", 3.0, True),
        "uniform:0.2": NoiseSpec("uniform", 0.2, False),
        "uniform:2sigma": NoiseSpec("uniform", 2.0, True),
        "gaussian:4sigma": NoiseSpec("gaussian", 4.0, True),
    }
    for spec, want in expected.items():
        assert parse_noise(spec) == want, spec
    assert parse_noise("uniform:0.2").text == "uniform:0.2" and parse_noise("3sigma").text == "3sigma"
    assert [default_window(n) for n in (2, 4, 8, 12, 28, 48)] == [1, 1, 3, 4, 10, 10]
    assert list(window_range(0, 10, 48)) == list(range(0, 5)) and list(window_range(20, 10, 48)) == list(
        range(15, 25)
    )
    assert list(window_range(3, 1, 4)) == [3]
    result = trace(model, "SMAP was created", "SMAP", samples=2, kinds="mlp")
    assert result.config["window"] == default_window(model.n_layers)
    assert "round" in result.config["window_rule"]


def test_sigma_is_cached(model, tmp_path, monkeypatch):
    monkeypatch.setenv("KELOCATE_CACHE", str(tmp_path))
    sigma = embedding_sigma(model, ["SMAP", "Paris", "Japan Japanese"])
    files = list((tmp_path / "noise_sigma").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["sigma"] == sigma
    ids = torch.cat([model.encode(s, special=False).ids for s in ["SMAP", "Paris", "Japan Japanese"]])
    with torch.no_grad():
        assert abs(sigma - float(model.hf.get_input_embeddings()(ids).std())) < 1e-7
    files[0].write_text(json.dumps({**json.loads(files[0].read_text()), "sigma": 123.0}))  # same key, other value
    assert embedding_sigma(model, ["SMAP", "Paris", "Japan Japanese"]) == 123.0  # read back from the cache
    assert embedding_sigma(model, ["Paris"]) != 123.0  # another subject set is another key


def test_work_units_bound():
    units = work_units(12, 1, 12, 10, ("hidden", "mlp", "attn"), default_window(12))
    assert 3.0 < units["bound_speedup"] < 4.5 and units["engine_speedup"] > units["bound_speedup"]


def test_average_indirect_effect(model, tmp_path):
    assert token_groups((1, 4), 8) == {
        "first subject token": [1],
        "middle subject tokens": [2],
        "last subject token": [3],
        "first subsequent token": [4],
        "further tokens": [5, 6],
        "last token": [7],
    }
    assert token_groups((2, 3), 3)["first subsequent token"] == []
    klob = tmp_path / "c.jsonl"
    klob.write_text(
        json.dumps(
            {
                "prompts": ["SMAP was created in _", "the music of Paris is _"],
                "knowledge": ["SMAP", "created_(P1)", "Japan"],
            }
        )
        + "\n"
    )
    facts, dropped = file_facts(klob)
    assert dropped == [] and [f.prompt for f in facts] == ["SMAP was created in", "the music of Paris is"]
    knowedit = tmp_path / "k.json"
    knowedit.write_text(
        json.dumps(
            [
                {
                    "subject": "Paris",
                    "prompt": "the music of Paris is",
                    "target_new": "x",
                    "ground_truth": "Japan",
                },
                {"subject": "Rome", "prompt": "no subject", "target_new": "x", "ground_truth": "y"},
            ]
        )
    )
    edits, dropped = file_facts(knowedit)
    assert [d["source"] for d in dropped] == ["k.json[1]"] and edits[0].answer == "Japan"
    seen = []
    blank = Fact("the music of Paris is", " ", "Japan", "blank subject")  # skipped, not fatal
    avg = average_indirect_effect(
        model,
        edits + facts + [blank],
        require_known=False,
        on_step=lambda i, f: seen.append(i),
        skipped_on_load=dropped,
        include_invalid=True,  # the averaging itself is tested here; skipping invalid traces elsewhere
        settings=TraceSettings(kinds="hidden,mlp", samples=3),
        samples=2,  # a single option overrides the settings given
    )
    assert seen == [0, 1, 2, 3] and avg["n_facts"] == 2 and avg["skipped"]["subject_not_in_prompt"] == 3
    assert avg["config"]["samples"] == 2 and avg["kinds"] == ["hidden", "mlp"]
    sources = [r["source"] for r in avg["skipped_records"]]
    assert sources == ["k.json[1]", facts[1].source, "blank subject"]  # each skipped record, where and why
    assert all(r["reason"] for r in avg["skipped_records"])
    last = avg["effects"]["hidden"]["last token"]
    assert last["n"] == 2 and len(last["mean"]) == model.n_layers
    assert all(lo <= m <= hi for lo, m, hi in zip(last["ci_low"], last["mean"], last["ci_high"], strict=True))
    json.dumps(avg)  # JSON-ready
    # the clearest facts per group, against a plain loop: trace each traced fact again, peak of its group curve
    reference = []
    for fact in (edits[0], facts[0]):
        again = trace(model, fact.prompt, fact.subject, fact.answer, kinds=("mlp",), samples=2)
        last_curve = again.indirect_effect("mlp")[again.subject_span[1] - 1]
        reference.append((fact.prompt, int(np.argmax(last_curve)), float(np.max(last_curve))))
    reference.sort(key=lambda row: -row[2])
    clearest = avg["clearest"]["mlp"]["last subject token"]
    assert [(c["prompt"], c["layer"]) for c in clearest] == [(p, layer) for p, layer, _ in reference]
    assert np.allclose([c["effect"] for c in clearest], [e for _, _, e in reference], atol=1e-6)
    assert clearest[0]["tokens"] and clearest[0]["answer"].strip() == "Japan"
    assert avg["clearest"]["hidden"]["further tokens"]  # every kind and group has its list


def test_trace_settings_are_one_object_that_single_options_override(model):
    from kelocate.locate.causal_trace.tracing import TraceSettings

    settings = TraceSettings(kinds="mlp,hidden", window=3, samples=3, seed=4, severed="attn")
    assert settings.kinds == ("mlp", "hidden") and settings.severed == ("attn",)
    prompt, subject = CASES[0]
    given = trace(model, prompt, subject, settings=settings)
    named = trace(model, prompt, subject, kinds="mlp,hidden", window=3, samples=3, seed=4, severed="attn")
    assert given.config == named.config
    for key in named.grids:  # the same options give the same numbers, bit for bit
        np.testing.assert_array_equal(given.grids[key], named.grids[key])
    overridden = trace(model, prompt, subject, settings=settings, samples=2)
    assert overridden.config["samples"] == 2 and overridden.config["kinds"] == ["mlp", "hidden"]
    with pytest.raises(KelocateError, match="unknown trace kind 'mpl'"):
        TraceSettings(kinds="mpl")
    with pytest.raises(KelocateError, match="--samples must be at least 1"):
        trace(model, prompt, subject, settings=settings, samples=0)
    with pytest.raises(TypeError):
        trace(model, prompt, subject, sampels=3)
