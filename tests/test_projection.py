"""Embedding-space projection (`kelocate.probes.projection`, `kelocate project`, `plots/projection.py`).

- a value vector's projection is the plain matrix product W_U @ W[:, i] (and, with the final norm, W_U @ the
  model's own final-norm module applied to it), its top tokens the argsort of those logits;
- on a model built so the answer is known (a value column equal to a token's unembedding row, that row the
  longest), the token is top-1 and an edit writing that column has Hit@1;
- a real ROME edit of the organism: every number and control is computed, consistent, and the record reverts
  bit-exactly; the CLI prints the same numbers as the API, and user mistakes are one line with exit code 2;
- the Figure 7 bars are written as a PNG.
"""

from __future__ import annotations

import json

import pytest
import torch

from kelocate.cli import main
from kelocate.edit import EditRecord, EditRequest, editor
from kelocate.errors import KelocateError
from kelocate.model import weights
from kelocate.probes.projection import project_edit, project_value, summarise

SMAP = EditRequest("SMAP was created in", "SMAP", "France", ground_truth="Japan")


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("error:")
    return err[0]


# ---------------------------------------------------------------------- value vectors
@pytest.mark.parametrize(("layer", "neuron"), [(0, 0), (1, 17), (2, 127), (-1, 5)])
def test_raw_projection_is_the_plain_matrix_product(tiny_model, layer, neuron):
    result = project_value(tiny_model, layer, neuron, top_k=20)
    column = weights.mlp_out(tiny_model, layer).detach()[:, neuron]
    logits = weights.unembedding(tiny_model).detach() @ column
    order = torch.argsort(logits, descending=True)[:20]
    assert [t.id for t in result.top] == order.tolist()
    assert [t.logit for t in result.top] == pytest.approx(logits[order].tolist(), rel=1e-5, abs=1e-6)
    assert [t.token for t in result.top] == tiny_model.labels(order)
    assert result.layer == layer % tiny_model.n_layers and not result.final_norm
    assert result.norm == pytest.approx(float(column.norm()), rel=1e-6)
    assert any("no final norm" in c for c in result.choices)


@pytest.mark.parametrize(("layer", "neuron"), [(0, 3), (2, 64)])
def test_final_norm_projection_uses_the_models_final_norm(tiny_model, layer, neuron):
    result = project_value(tiny_model, layer, neuron, top_k=15, final_norm=True)
    column = weights.mlp_out(tiny_model, layer).detach()[:, neuron]
    with torch.no_grad():
        normed = tiny_model.hf.model.norm(column[None, None])[0, 0]  # the model's own RMSNorm module
    logits = weights.unembedding(tiny_model).detach() @ normed
    order = torch.argsort(logits, descending=True)[:15]
    assert [t.id for t in result.top] == order.tolist()
    assert [t.logit for t in result.top] == pytest.approx(logits[order].tolist(), rel=1e-5, abs=1e-5)
    assert result.final_norm and any("final RMSNorm" in c for c in result.choices)


@pytest.mark.parametrize(("layer", "neuron", "needle"), [(7, 0, "layer 7 does not exist"),
                                                         (0, 128, "neuron 128 does not exist"),
                                                         (0, -1, "neuron -1 does not exist")])
def test_bad_layer_or_neuron_is_one_error(tiny_model, layer, neuron, needle):
    with pytest.raises(KelocateError, match=needle):
        project_value(tiny_model, layer, neuron)


# ---------------------------------------------------------------------- a known answer
@pytest.fixture
def fresh_tiny(tiny_model_dir):
    """A copy of the tiny model of this test's own (its weights are changed)."""
    from kelocate.loading import load_model

    return load_model(tiny_model_dir)


def _manual_record(model, names, write, request) -> EditRecord:
    """An edit made by hand: snapshot, `write()` in place, snapshot again."""
    before = weights.snapshot(model, names)
    with torch.no_grad():
        write()
    after = weights.snapshot(model, names)
    return EditRecord("manual", before, after, model.fingerprint, layers=[], requests=[request.to_json()],
                      applied=True, model=model)


def test_a_column_equal_to_a_tokens_unembedding_row_projects_to_it(fresh_tiny):
    model, layer, neuron = fresh_tiny, 1, 40
    request = EditRequest("SMAP was created in", "SMAP", "France")
    token = model.answer_ids(request.prompt, request.target_new)[0]
    w_u = weights.unembedding(model)
    with torch.no_grad():  # make the target's row the longest: then u_t . u_t > u_i . u_t for every other i
        w_u[token] *= 2 * float(w_u.norm(dim=1).max()) / float(w_u[token].norm())
    row = w_u[token].detach().clone()
    w = weights.mlp_out(model, layer)
    with torch.no_grad():  # before the edit the column points away from the token: it ranks last
        w[:, neuron].copy_(-row)
    assert project_value(model, layer, neuron, top_k=w_u.shape[0]).top[-1].id == token

    record = _manual_record(model, [weights.mlp_out_name(layer)], lambda: w[:, neuron].copy_(0.5 * row), request)
    value = project_value(model, layer, neuron, top_k=3)
    assert value.top[0].id == token and value.top[0].token == model.labels([token])[0]
    result = project_edit(model, record)
    assert result.layer == layer and [p.layer for p in result.layers] == [layer]
    assert result.headline.columns == [neuron]  # the one changed column; no unchanged column is picked
    hits = result.headline.targets[0]
    assert hits.token_id == token
    assert hits.top["before"].ranks == [w_u.shape[0] - 1] and hits.top["before"].any(50) == 0.0
    assert hits.top["after"].ranks == [0] and hits.top["after"].any(1) == 1.0 and hits.top["after"].mean(1) == 1.0
    assert result.hit("top", "after", "any", 1) == 1.0
    assert neuron not in hits.random["before"].columns and len(hits.random["before"].columns) == 5
    assert hits.random["before"].ranks == hits.random["after"].ranks  # unchanged columns: same ranks
    # the base rate counts the edited column after the edit, not before
    assert hits.base["after"].hits[1] == hits.base["before"].hits[1] + (hits.top["before"].ranks[0] >= 1)
    record.revert()


def test_headline_is_the_layer_with_the_largest_change_and_foreign_edits_are_refused(fresh_tiny):
    model = fresh_tiny
    names = [weights.mlp_out_name(0), weights.mlp_out_name(2)]
    w0, w2 = weights.mlp_out(model, 0), weights.mlp_out(model, 2)

    def write():
        w0[:, :3] += 0.01
        w2[:, 5:9] -= 1.0

    record = _manual_record(model, names, write, SMAP)
    result = project_edit(model, record, n_columns=3)
    assert [p.layer for p in result.layers] == [0, 2] and result.layer == 2
    assert len(result.headline.columns) == 3 and set(result.headline.columns) <= {5, 6, 7, 8}
    assert any("headline layer 2" in c for c in result.choices)
    # the random control columns: reproducible for one record, drawn afresh for another request or seed
    columns = result.headline.targets[0].random["before"].columns
    assert project_edit(model, record, n_columns=3).headline.targets[0].random["before"].columns == columns
    assert project_edit(model, record, n_columns=3, seed=1).headline.targets[0].random["before"].columns != columns
    other = EditRecord(**{**vars(record), "requests": [EditRequest("SMAP is a", "SMAP", "band").to_json()]})
    assert project_edit(model, other, n_columns=3).headline.targets[0].random["before"].columns != columns
    json.dumps(result.to_json())
    record.revert()

    attn = _manual_record(model, ["model.layers.0.self_attn.o_proj.weight"],
                          lambda: weights.attn_out(model, 0).add_(0.1), SMAP)
    with pytest.raises(KelocateError, match="changed no down_proj weight"):
        project_edit(model, attn)
    attn.revert()
    record.fingerprint = "0" * 24
    with pytest.raises(KelocateError, match="load the model the edit was made on"):
        project_edit(model, record)


# ---------------------------------------------------------------------- a real ROME edit
@pytest.fixture(scope="module")
def rome_projection(organism, tmp_path_factory):
    """A ROME edit of the organism at layer 5, projected, saved, then reverted."""
    original = weights.state_hash(organism)
    record = editor("rome").apply(organism, SMAP, layers=5)
    try:
        projection = project_edit(organism, record)
        path = record.save(tmp_path_factory.mktemp("projection") / "rome.safetensors")
    finally:
        record.revert()
    assert weights.state_hash(organism) == original  # reverted bit for bit
    return projection, path


def test_rome_edit_projection_and_its_controls(organism, rome_projection):
    result, _ = rome_projection
    assert result.method == "rome" and result.layer == 5 and result.ks == (1, 10, 50)
    layer = result.headline
    assert len(layer.columns) == 5 and len(set(layer.columns)) == 5
    assert layer.column_norms == sorted(layer.column_norms, reverse=True) and 0 < layer.column_share <= 1
    assert len(layer.tokens["before"]) == len(layer.tokens["after"]) == 5
    (hits,) = layer.targets
    assert hits.token_id == organism.answer_ids(SMAP.prompt, "France")[0]
    for group in (hits.top, hits.random):
        for column_hits in group.values():
            assert len(column_hits.ranks) == 5 and all(0 <= r < 961 for r in column_hits.ranks)
            for how in (column_hits.any, column_hits.mean):  # monotone in k
                assert how(1) <= how(10) <= how(50)
    assert not set(hits.random["before"].columns) & set(layer.columns)
    for base in hits.base.values():
        assert base.n_columns == organism.d_mlp
        assert 0 <= base.hits[1] <= base.hits[10] <= base.hits[50] <= organism.d_mlp
        assert base.rate(50) <= base.any_of(50) <= 1
    # ROME writes the new target into the edited value columns
    assert result.hit("top", "after", "any", 10) == 1.0
    assert hits.base["after"].rate(10) > hits.base["before"].rate(10)
    summary = summarise([result])
    assert summary["n"] == 1 and summary["top"]["after"]["any"]["10"] == 1.0
    assert json.loads(json.dumps(result.to_json()))["layers"][0]["targets"][0]["token_id"] == hits.token_id


def test_cli_record_gives_the_apis_numbers(rome_projection, capsys):
    result, path = rome_projection
    assert main(["project", "--record", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == json.loads(json.dumps(result.to_json()))
    assert main(["project", "--record", str(path)]) == 0
    text = capsys.readouterr().out
    assert "Hit@50" in text and "base rate" in text and "random columns" in text


# ---------------------------------------------------------------------- the CLI
def test_cli_value_vector_json(tiny_model_dir, tiny_model, capsys):
    assert main(["project", "--layer", "1", "--neuron", "17", "--top-k", "4", "--model", str(tiny_model_dir),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["id"] for t in out["top"]] == [t.id for t in project_value(tiny_model, 1, 17, top_k=4).top]
    assert main(["project", "--layer", "1", "--neuron", "17", "--final-norm", "--model", str(tiny_model_dir)]) == 0
    assert "final norm" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "needle"), [
    (["--layer", "9", "--neuron", "0"], "layer 9 does not exist"),
    (["--layer", "0", "--neuron", "500"], "neuron 500 does not exist"),
    (["--layer", "0", "--neuron", "1", "--top-k", "0"], "top-k 0 is out of range"),
    (["--layer", "0"], "pass --layer L --neuron I"),
    (["--record", "x.safetensors", "--layer", "0"], "not both"),
    (["--record", "/no/such/record.safetensors"], "does not exist"),
])
def test_cli_mistakes_are_one_line(tiny_model_dir, argv, needle, capsys):
    assert main(["project", *argv, "--model", str(tiny_model_dir)]) == 2
    assert needle in one_error_line(capsys)


def test_cli_refuses_a_record_of_another_model(rome_projection, tiny_model_dir, capsys):
    _, path = rome_projection
    assert main(["project", "--record", str(path), "--model", str(tiny_model_dir)]) == 2
    assert "load the model the edit was made on" in one_error_line(capsys)


# ---------------------------------------------------------------------- the figure
def test_projection_bars_write_a_png(rome_projection, tmp_path):
    from kelocate.plots.projection import draw_projection_hits

    result, _ = rome_projection
    summary = summarise([result])
    paths = draw_projection_hits({"rome": summary, "rome again": summary}, tmp_path / "fig7", formats=("png",),
                                 title="organism")
    assert paths == [tmp_path / "fig7.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(KelocateError):
        draw_projection_hits({}, tmp_path / "none", formats=("png",))
