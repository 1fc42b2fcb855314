"""The editor contract and the closed forms of ROME, MEMIT and AlphaEdit, on a tiny random Llama.

Each closed form is checked against a slow, direct computation (explicit inverses, plain loops); the
editors' in-model updates are checked for the structure their maths implies (rank one along C^-1 k*,
normal equations, the null-space property), and every edit reverts to bit-identical weights.
"""

from __future__ import annotations

import random

import pytest
import torch

from kelocate.edit.keys import templates_for
from kelocate.edit.methods import alphaedit, memit, rome
from kelocate.edit.record import EditRecord, NonFiniteEditError
from kelocate.edit.request import EditRequest
from kelocate.edit.stats import second_moments
from kelocate.errors import KelocateError
from kelocate.model import weights
from kelocate.testing.random_model import WORDS

FAST = {"v_num_grad_steps": 4, "context_lengths": [[3, 2]], "context_starts": ["the"], "mom2_n_samples": 400,
        "mom2_max_length": 16}
REQUEST = EditRequest("SMAP was created in", "SMAP", "France", paraphrases=("SMAP group created in",))
OTHER = EditRequest("Paris is the capital of", "Paris", "Japan")


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(400)]


def slow_key(model, prompt: str, subject: str, templates: list[str], layer: int) -> torch.Tensor:
    """k*: mlp_post at the subject's last token, one text at a time, averaged over templates."""
    keys = []
    for template in templates:
        text = template.format(prompt)
        _, end = model.subject_span(text, subject)
        _, cache = model.bridge.run_with_cache(model.encode(text).ids[None],
                                               names_filter=[f"blocks.{layer}.mlp.hook_post"])
        keys.append(cache[f"blocks.{layer}.mlp.hook_post"][0, end - 1].double())
    return torch.stack(keys).mean(0)


# ---------------------------------------------------------------------- closed forms vs direct maths
def test_rank_one_formula_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    w, k, v, u = torch.randn(5, 7, generator=g), torch.randn(7, generator=g), torch.randn(5, generator=g), \
        torch.randn(7, generator=g)
    new = rome.rank_one(w, k, v, u)
    un = u.double() / u.double().norm()
    ref = w.double().clone()
    for i in range(5):
        r_i = (v[i].double() - sum(w[i, j].double() * k[j].double() for j in range(7))) / (un @ k.double())
        for j in range(7):
            ref[i, j] += r_i * un[j]
    torch.testing.assert_close(new, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(new @ k.double(), v.double(), rtol=0, atol=1e-10)  # k maps to v exactly


def test_memit_update_solves_the_normal_equations():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(9, 9, generator=g, dtype=torch.float64)
    cov, keys, resid = a @ a.T / 9, torch.randn(9, 3, generator=g, dtype=torch.float64), \
        torch.randn(4, 3, generator=g, dtype=torch.float64)
    delta = memit.memit_update(cov, keys, resid, weight=2.0)
    direct = resid @ keys.T @ torch.linalg.inv(2.0 * cov + keys @ keys.T)  # explicit inverse
    torch.testing.assert_close(delta, direct, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(delta @ (2.0 * cov + keys @ keys.T), resid @ keys.T, rtol=1e-9, atol=1e-9)


def test_alphaedit_update_is_in_the_null_space_of_preserved_keys():
    g = torch.Generator().manual_seed(2)
    preserved = torch.randn(10, 6, generator=g, dtype=torch.float64)  # 6 preserved keys span 6 of 10 dims
    cov = preserved @ preserved.T / 6
    p, dims = alphaedit.null_space_projection(cov, threshold=1e-8)
    assert dims == 4
    keys, resid = torch.randn(10, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g,
                                                                                     dtype=torch.float64)
    delta = alphaedit.alphaedit_update(p, keys, resid, None, l2=0.5)
    assert (delta @ preserved).abs().max() < 1e-9 * (1 + delta.abs().max())  # dW K0 ~= 0
    direct = (torch.linalg.inv(p @ keys @ keys.T + 0.5 * torch.eye(10, dtype=torch.float64)) @ p @ keys @ resid.T).T
    torch.testing.assert_close(delta, direct, rtol=1e-9, atol=1e-9)
    # the earlier edits' keys enter the Gram matrix
    earlier = keys[:, :1] @ keys[:, :1].T
    with_earlier = alphaedit.alphaedit_update(p, keys, resid, earlier, l2=0.5)
    direct = (torch.linalg.inv(p @ (keys @ keys.T + earlier) + 0.5 * torch.eye(10, dtype=torch.float64))
              @ p @ keys @ resid.T).T
    torch.testing.assert_close(with_earlier, direct, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------- the editors in a model
def test_rome_writes_a_rank_one_update_along_c_inverse_k(tiny_model, corpus):
    model = tiny_model
    original = weights.state_hash(model)
    editor = rome.ROME(corpus=corpus, **FAST)
    record = editor.apply(model, REQUEST, layers=1)
    try:
        assert record.names == [weights.mlp_out_name(1)] and record.layers == [1]
        delta = record.delta(weights.mlp_out_name(1)).double()
        s = torch.linalg.svdvals(delta)
        assert s[1] < 1e-5 * s[0]  # rank one (float32 storage of W + dW)
        templates = templates_for(model, editor.hparams(model))
        key = slow_key(model, REQUEST.prompt, REQUEST.subject, templates, 1)
        cov = second_moments(model, [1], texts=corpus, n_samples=400, max_length=16)[1].mom2.double()
        u = torch.linalg.solve(cov, key)
        u = u / u.norm()
        cosine = (delta.norm(dim=0) @ u.abs()) / delta.norm()
        assert cosine > 0.999, cosine
        assert torch.allclose(delta @ torch.outer(u, u), delta, atol=1e-4 * float(delta.abs().max()))
        assert record.config["profile"] == "generic" and record.config["v_num_grad_steps"] == 4
    finally:
        record.revert()
    assert weights.state_hash(model) == original


def test_memit_and_alphaedit_batch_edits_revert_exactly(tiny_model, corpus):
    model = tiny_model
    original = weights.state_hash(model)
    for cls in (memit.MEMIT, alphaedit.AlphaEdit):
        record = cls(corpus=corpus, **FAST).apply(model, [REQUEST, OTHER], layers=[0, 1, 2])
        assert record.names == [weights.mlp_out_name(layer) for layer in (0, 1, 2)]
        assert len(record.requests) == 2 and record.changed_elements() > 0
        record.revert()
        assert weights.state_hash(model) == original


def test_alphaedit_leaves_the_preserved_keys_outputs_alone(tiny_model, corpus):
    model = tiny_model
    editor = alphaedit.AlphaEdit(corpus=corpus, nullspace_threshold=1e-3, **FAST)
    record = editor.apply(model, REQUEST, layers=[1, 2])
    try:
        cov = second_moments(model, [1], texts=corpus, n_samples=400, max_length=16)[1].mom2.double()
        values, vectors = torch.linalg.eigh(cov)
        kept = vectors[:, values >= 1e-3]  # directions the corpus' keys occupy
        delta = record.delta(weights.mlp_out_name(1)).double()
        assert (delta @ kept).abs().max() < 1e-4 * delta.abs().max()
        assert record.extra["null_space_dims"]["1"] == int((values < 1e-3).sum())
        assert editor.earlier(1).shape == (model.d_mlp, model.d_mlp)
    finally:
        record.revert()
    assert editor.earlier(1) is None  # a reverted edit's keys no longer constrain later edits


# ---------------------------------------------------------------------- records
def test_records_stack_save_load_and_refuse_another_model(tiny_model, corpus, tmp_path):
    model = tiny_model
    original = weights.state_hash(model)
    first = rome.ROME(corpus=corpus, **FAST).apply(model, REQUEST, layers=1)
    after_first = weights.state_hash(model)
    second = rome.ROME(corpus=corpus, **FAST).apply(model, OTHER, layers=1)
    with pytest.raises(KelocateError, match="revert later edits first"):
        first.revert()  # the second edit sits on top of it
    path = second.save(tmp_path / "second.safetensors")
    first.save(tmp_path / "first.safetensors")
    second.revert()
    assert weights.state_hash(model) == after_first
    first.revert()
    assert weights.state_hash(model) == original
    with pytest.raises(KelocateError, match="apply the records it was stacked on first"):
        EditRecord.load(path).apply_to(model)
    loaded = [EditRecord.load(tmp_path / "first.safetensors").apply_to(model), EditRecord.load(path).apply_to(model)]
    assert loaded[1].method == "rome" and loaded[1].requests[0]["target_new"] == "Japan"
    for record in reversed(loaded):
        record.revert()
    assert weights.state_hash(model) == original
    foreign = EditRecord.load(path)
    foreign.fingerprint = "0" * 24
    with pytest.raises(KelocateError, match="load the model the edit was made on"):
        foreign.apply_to(model)
    (tmp_path / "junk.safetensors").write_bytes(b"not a record")
    with pytest.raises(KelocateError, match="not a kelocate edit record"):
        EditRecord.load(tmp_path / "junk.safetensors")


def test_a_non_finite_edit_is_rolled_back(tiny_model, corpus, monkeypatch):
    model = tiny_model
    original = weights.state_hash(model)
    monkeypatch.setattr(rome, "rank_one", lambda w, k, v, u: torch.full_like(w.double(), float("nan")))
    with pytest.raises(NonFiniteEditError, match="rolled back"):
        rome.ROME(corpus=corpus, **FAST).apply(model, REQUEST, layers=1)
    assert weights.state_hash(model) == original


def test_bad_requests_and_settings_are_one_line_errors(tiny_model, corpus):
    with pytest.raises(KelocateError, match="does not occur in prompt"):
        EditRequest("SMAP was created in", "Sony", "France")
    with pytest.raises(KelocateError, match="layer 9 does not exist"):
        rome.ROME(corpus=corpus, **FAST).apply(tiny_model, REQUEST, layers=9)
    with pytest.raises(KelocateError, match="one layer"):
        rome.ROME(corpus=corpus, **FAST).apply(tiny_model, REQUEST, layers=[0, 1])
    with pytest.raises(KelocateError, match="one fact at a time"):
        rome.ROME(corpus=corpus, **FAST).apply(tiny_model, [REQUEST, OTHER], layers=1)
    with pytest.raises(KelocateError, match="unknown rome setting 'v_steps'"):
        rome.ROME(v_steps=3).apply(tiny_model, REQUEST, layers=1)


def test_rome_maps_the_bare_key_to_the_optimised_value(tiny_model, corpus):
    """After the edit, the MLP output at the subject's last token of the bare prompt is v* (ROME's
    constraint W' k = v*); v* is recomputed by the same deterministic optimisation on the unedited model."""
    from kelocate.edit.keys import read_at, subject_row
    from kelocate.edit.target import optimize_target

    model = tiny_model
    editor = rome.ROME(corpus=corpus, **FAST)
    hp = editor.hparams(model)
    target = optimize_target(model, REQUEST, 1, ("mlp",), templates_for(model, hp), hp).values["mlp"]
    record = editor.apply(model, REQUEST, layers=1)
    try:
        out = read_at(model, [subject_row(model, REQUEST.prompt, REQUEST.subject)], "mlp", [1])[1][0]
        torch.testing.assert_close(out, target, rtol=1e-4, atol=1e-4 * float(target.abs().max()))
    finally:
        record.revert()


def test_pmet_optimises_attention_and_mlp_but_writes_only_the_mlps(tiny_model, corpus):
    from kelocate.edit.methods import pmet

    model = tiny_model
    original = weights.state_hash(model)
    record = pmet.PMET(corpus=corpus, **FAST).apply(model, REQUEST, layers=[1, 2])
    try:
        assert record.names == [weights.mlp_out_name(1), weights.mlp_out_name(2)]  # o_proj is never written
        assert set(record.extra["targets"][0]["delta_norm"]) == {"attn", "mlp"}  # both deltas optimised
        assert record.extra["spreading"] == "sqrt"
        resid = torch.ones(3, 2)
        torch.testing.assert_close(pmet.PMET().spread(resid, 4), resid / 2)  # sqrt(4 layers left)
        torch.testing.assert_close(memit.MEMIT().spread(resid, 4), resid / 4)  # MEMIT: an even split
    finally:
        record.revert()
    assert weights.state_hash(model) == original


# ---------------------------------------------------------------------- the registry and the token vocabulary
def test_the_registry_names_every_editor_and_what_it_needs():
    from kelocate.edit import editor_class, registry

    assert list(registry.STUDY_METHODS) == ["kn", "rome", "memit", "pmet", "alphaedit", "mend", "ft-l", "ft-m",
                                            "serac", "ice", "adalora"]  # the study's order
    assert registry.OPTIONAL_METHODS == ("ike",) and registry.TRAINABLE == ("mend", "serac")
    assert {n: m.training_draws for n, m in registry.METHODS.items() if m.training_draws != 1} == {"serac": 8}
    for name, entry in registry.METHODS.items():
        cls = editor_class(name)
        assert cls.method == name and cls.__new__(cls).locate == entry.locate  # the editor reads its entry
        if entry.trainable:
            assert callable(entry.train_function()) and callable(entry.config_function())
    assert {n for n, m in registry.METHODS.items() if m.needs_trained} == {"mend", "serac"}
    assert [n for n, m in registry.METHODS.items() if m.needs_pool] == ["ike"]
    assert registry.CORPUS_METHODS == ("rome", "memit", "pmet", "alphaedit")
    with pytest.raises(KelocateError, match="unknown edit method 'romee'; use one of kn, rome"):
        editor_class("romee")
    with pytest.raises(KelocateError, match="rome is not trained"):
        registry.method("rome").train_function()


def test_the_edit_token_is_named_as_tracing_names_it_and_a_user_file_may_spell_it_the_old_way(tiny_model, tmp_path):
    assert rome.ROME().hparams(tiny_model)["token"] == "last_subject"
    old = tmp_path / "old.toml"
    old.write_text('[rome]\ntoken = "subject_last"\n')  # the old spelling (edit/config.py)
    assert rome.ROME(config_file=old).hparams(tiny_model)["token"] == "last_subject"
    with pytest.raises(KelocateError, match="unknown edit token 'first'"):
        rome.ROME(token="first").hparams(tiny_model)


def test_alphaedits_projection_follows_the_corpus_and_the_text_length(tiny_model, corpus):
    """The null-space projection is keyed like the statistics it comes from: another corpus, or another
    mom2_max_length, gives another P (it once was keyed by the layer, threshold and sample count alone)."""
    editor = alphaedit.AlphaEdit(corpus=corpus, **FAST)
    hp = editor.hparams(tiny_model)
    first = editor.projection(tiny_model, 1, hp)
    editor.corpus = list(reversed(corpus))[: len(corpus) // 2]  # another corpus, same editor object
    other_corpus = editor.projection(tiny_model, 1, hp)
    assert not torch.equal(first, other_corpus)
    editor.corpus = corpus
    assert torch.equal(editor.projection(tiny_model, 1, hp), first)  # the same statistics: the same P
    shorter = editor.projection(tiny_model, 1, {**hp, "mom2_max_length": 4})
    assert not torch.equal(first, shorter)
