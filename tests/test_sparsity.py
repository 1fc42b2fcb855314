"""`kelocate.probes.sparsity`: every measure on hand-made dW with known answers and against plain loops,
on real ROME and FT-L edits of the organism (ROME's rank is one, the record reverts bit-exactly), the
`kelocate sparsity` command (tables, JSON, one-line errors) and the two figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from kelocate.cli import main
from kelocate.edit.record import EditRecord
from kelocate.errors import KelocateError
from kelocate.probes.sparsity import (
    abs_delta,
    concentration_values,
    numerical_rank,
    parameter_sparsity,
    participation_ratio,
    sparsity,
    top_fraction_count,
)

NAME = "model.layers.{l}.mlp.down_proj.weight"


def measure(delta: np.ndarray, before: np.ndarray | None = None):
    """The measures of dW = `delta` written onto `before` (default zeros), both float32."""
    delta = torch.tensor(delta, dtype=torch.float32)
    base = torch.zeros_like(delta) if before is None else torch.tensor(before, dtype=torch.float32)
    return parameter_sparsity(NAME.format(l=2), base, base + delta)


def plain(delta: np.ndarray) -> dict[str, float]:
    """The column measures by plain loops over entries (energy mass), the reference for the vectorised ones."""
    rows, cols = delta.shape
    energy = []
    for j in range(cols):
        s = 0.0
        for i in range(rows):
            s += float(delta[i, j]) ** 2
        energy.append(s)
    total = sum(energy)
    ranked = sorted(energy, reverse=True)
    k = max(1, math.ceil(cols / 100))
    abs_sum = sum(abs(float(delta[i, j])) for i in range(rows) for j in range(cols))
    return {"top5": sum(ranked[:5]) / total, "top1pct": sum(ranked[:k]) / total, "k": k,
            "pr": total ** 2 / sum(e * e for e in energy), "abs_sum": abs_sum}


# ====================================================================== hand-made dW with known answers

def test_one_column_is_fully_concentrated():
    delta = np.zeros((8, 20))
    delta[:, 3] = np.arange(1, 9)
    p = measure(delta)
    assert p.columns.top5_share == 1 and p.columns.top1pct_share == 1 and p.columns.top1pct_count == 1
    assert p.columns.participation_ratio == pytest.approx(1) and p.columns_l1.participation_ratio == pytest.approx(1)
    assert p.columns.top == [3] and p.rank.rank == 1 and p.changed == 8
    assert p.column_abs[3] == 36 and p.row_abs.tolist() == list(range(1, 9))
    assert p.shape == [8, 20] and p.layer == 2


def test_uniform_columns_have_participation_ratio_n():
    p = measure(np.ones((6, 50)))  # every column the same: PR = 50, and the all-ones matrix has rank one
    assert p.columns.participation_ratio == pytest.approx(50) and p.columns_l1.participation_ratio == pytest.approx(50)
    assert p.columns.top5_share == pytest.approx(5 / 50) and p.columns.top1pct_share == pytest.approx(1 / 50)
    assert p.rank.rank == 1
    hadamard = np.array([[1.0]])
    for _ in range(3):  # Sylvester: 8 x 8, entries +-1, orthogonal columns of equal norm
        hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
    p = measure(hadamard)
    assert p.columns.participation_ratio == pytest.approx(8) and p.rank.rank == 8
    assert p.rank.stable_rank == pytest.approx(8) and p.rows.participation_ratio == pytest.approx(8)


def test_rank_one_outer_product_touches_every_column_where_the_key_is_nonzero():
    u = np.array([0.5, -1.0, 2.0, 0.25])
    v = np.array([1.0, 2.0, 3.0] + [0.0] * 7)
    p = measure(np.outer(u, v))
    # column energies v_j^2 ||u||^2: PR = (sum v^2)^2 / sum v^4 = 14^2 / 98 = 2, whatever u is
    assert p.columns.participation_ratio == pytest.approx(2.0)
    assert p.columns_l1.participation_ratio == pytest.approx(36 / 14)  # (sum |v|)^2 / sum v^2
    assert p.columns.top1pct_share == pytest.approx(9 / 14) and p.columns.top5_share == pytest.approx(1)
    assert p.columns.top == [2, 1, 0] and p.rank.rank == 1 and p.rank.stable_rank == pytest.approx(1)
    dense = measure(np.outer(u, np.linspace(1, 2, 300)))  # rank one, yet spread over all 300 columns
    assert dense.rank.rank == 1 and dense.columns.participation_ratio > 250


def test_random_full_rank_matches_plain_loops():
    rng = np.random.default_rng(0)
    delta = rng.standard_normal((12, 250)).astype(np.float32).astype(np.float64)
    p, ref = measure(delta), plain(delta)
    assert p.columns.top5_share == pytest.approx(ref["top5"], rel=1e-12)
    assert p.columns.top1pct_share == pytest.approx(ref["top1pct"], rel=1e-12) and p.columns.top1pct_count == 3
    assert p.columns.participation_ratio == pytest.approx(ref["pr"], rel=1e-12)
    assert p.abs_sum == pytest.approx(ref["abs_sum"], rel=1e-12)
    assert p.rank.rank == 12 == np.linalg.matrix_rank(delta)
    top5 = sorted(range(250), key=lambda j: -float((delta[:, j] ** 2).sum()))[:5]
    assert p.columns.top == top5


def test_rank_ignores_the_rounding_of_the_written_weights():
    """A rank-one dW written onto weights of size 1 in float32: the stored difference carries rounding of
    ~6e-8 per entry, full rank; numpy's default tolerance counts it, the rounding floor does not."""
    rng = np.random.default_rng(1)
    before = rng.uniform(0.5, 1.0, (64, 64)).astype(np.float32)
    delta = 1e-4 * np.outer(rng.standard_normal(64), rng.standard_normal(64))
    after = (torch.tensor(before) + torch.tensor(delta, dtype=torch.float32))
    stored = after.double().numpy() - before.astype(np.float64)
    assert np.linalg.matrix_rank(stored) > 1  # numpy's default sees the rounding as rank
    p = parameter_sparsity(NAME.format(l=0), torch.tensor(before), after)
    assert p.rank.rank == 1 and p.rank.tolerance > 64 * np.finfo(np.float32).eps * p.rank.singular_values[0]


def test_zero_change_has_no_shares_and_rank_zero():
    p = measure(np.zeros((4, 10)))
    assert p.columns.top5_share is None and p.columns.participation_ratio is None and p.columns.top == []
    assert p.rank.rank == 0 and p.rank.stable_rank is None and p.changed == 0
    assert participation_ratio(np.zeros(3)) is None
    with pytest.raises(KelocateError, match="non-negative"):
        participation_ratio(np.array([1.0, -1.0]))


def test_top_fraction_count_rounds_up():
    assert [top_fraction_count(n) for n in (1, 99, 100, 101, 300, 768)] == [1, 1, 1, 2, 3, 8]


def test_tolerance_follows_numpy_for_a_plain_matrix():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 30)) @ rng.standard_normal((30, 40))  # rank 5
    r = numerical_rank(a, float(np.finfo(np.float64).eps))
    assert r.rank == 5 == np.linalg.matrix_rank(a)
    assert r.tolerance == pytest.approx(40 * np.finfo(np.float64).eps * np.linalg.svd(a, compute_uv=False)[0])


def hand_record() -> EditRecord:
    """A two-layer record (one-column change in layer 1, uniform change in layer 3) made without a model."""
    before = {NAME.format(l=layer): torch.ones(4, 10) for layer in (1, 3)}
    after = {n: t.clone() for n, t in before.items()}
    after[NAME.format(l=1)][:, 7] += 2.0
    after[NAME.format(l=3)] += 0.5
    return EditRecord("rome", before, after, fingerprint="abc", requests=[{"prompt": "p"}])


def test_record_result_per_layer_and_as_json():
    result = sparsity(hand_record())
    assert [m.layer for m in result.layers] == [1, 3]
    assert result.layers[0].abs_sum == pytest.approx(8) and result.layers[1].abs_sum == pytest.approx(20)
    assert result.layers[0].relative == pytest.approx(4 / math.sqrt(40))
    assert result.parameter().name == NAME.format(l=1)  # the largest ||dW||_F: 4 > sqrt(10)
    data = json.loads(result.to_json())
    assert data["parameters"][0]["columns"]["top"] == [7] and len(data["parameters"][0]["column_abs"]) == 10
    assert "column_abs" not in json.loads(result.to_json(arrays=False))["parameters"][0]
    assert "energy" in data["conventions"]["column_mass"]
    values = concentration_values([result])
    assert values["participation ratio"] == pytest.approx([1, 10]) and values["rank"] == [1, 1]
    name, heat = abs_delta(hand_record())
    assert heat.shape == (4, 10) and heat.max() == 2


def test_a_record_without_weight_change_is_one_error():
    served = EditRecord("ice", {}, {}, fingerprint="abc", serving={"before": "", "after": "Imagine"})
    with pytest.raises(KelocateError, match="changes no weights .*served"):
        sparsity(served)
    with pytest.raises(KelocateError, match="did not change"):
        abs_delta(hand_record(), "model.layers.0.mlp.down_proj.weight")


# ====================================================================== real edits of the organism

REQUEST = ("SMAP was created in", "SMAP", "France")


@pytest.fixture(scope="module")
def edits(organism):
    """ROME at layer 5 and FT-L (its profile's layer) on the SMAP fact, each reverted bit-exactly."""
    import kelocate
    from kelocate.model import weights

    records = {}
    for method, layers in (("rome", 5), ("ft-l", None)):
        names = [weights.mlp_out_name(layer) for layer in range(organism.n_layers)]
        snap = weights.snapshot(organism, names)
        record = kelocate.editor(method).apply(organism, kelocate.EditRequest(*REQUEST), layers=layers)
        record.revert()
        assert all(torch.equal(weights.parameter(organism, n), snap[n]) for n in names)  # bit-exact
        records[method] = record
    return records


def test_rome_is_rank_one_and_spread_over_columns(edits):
    result = sparsity(edits["rome"])
    (p,) = result.parameters
    assert p.name == NAME.format(l=5) and [m.layer for m in result.layers] == [5]
    assert p.rank.rank == 1 and p.rank.stable_rank == pytest.approx(1, abs=1e-3)
    assert p.shape == [192, 768] and 1 <= p.columns.participation_ratio <= 768
    assert 0 < p.columns.top5_share <= 1 and p.columns.top1pct_count == 8
    # a rank-one update writes every column whose key entry is nonzero
    assert np.count_nonzero(p.column_energy) > 0.9 * 768


def test_ft_l_measures_are_consistent(edits):
    result = sparsity(edits["ft-l"])
    for p in result.parameters:
        assert p.rank.rank >= 1 and 0 < p.columns.top5_share <= p.columns.top1pct_share <= 1  # 8 columns >= 5
        assert p.abs_sum == pytest.approx(float(edits["ft-l"].delta(p.name).abs().double().sum()), rel=1e-5)


def test_adalora_rank_is_its_adapters_rank(organism):
    """AdaLoRA's record holds the merged base weights, so dW = B diag(E) A * scale: its numerical rank is the
    number of singular values E its rank allocation kept (the trained adapter is in record.attachments)."""
    import kelocate

    record = kelocate.editor("adalora").apply(organism, kelocate.EditRequest(*REQUEST))
    record.revert()
    result = sparsity(record)
    assert {p.name.split(".")[-2] for p in result.parameters} == {"q_proj", "v_proj"}
    for p in result.parameters:
        kept = record.attachments[f"model.{p.name.removesuffix('.weight')}.lora_E.default"]
        assert p.rank.rank == int(torch.count_nonzero(kept)), p.name
        assert (p.columns.participation_ratio is None) == (p.changed == 0)


# ====================================================================== the command

@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    from kelocate.commands.common import console, err_console

    monkeypatch.setattr(console, "_width", 200)
    monkeypatch.setattr(err_console, "_width", 400)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_cli_tables_and_json(edits, organism, tmp_path, capsys):
    path = edits["rome"].save(tmp_path / "rome.safetensors")
    assert main(["sparsity", "--record", str(path), "--model", str(organism.path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "participation ratio" in out and NAME.format(l=5) in out and "rank_tolerance" in out
    assert main(["sparsity", "--record", str(path), "--json", "--arrays"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"][0]["rank"]["rank"] == 1 and len(data["parameters"][0]["column_abs"]) == 768


def test_cli_errors_are_one_line(edits, tiny_model_dir, tmp_path, capsys):
    assert main(["sparsity", "--record", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in one_error_line(capsys)
    served = EditRecord("ice", {}, {}, fingerprint="abc", serving={"before": "", "after": "Imagine"})
    assert main(["sparsity", "--record", str(served.save(tmp_path / "ice.safetensors"))]) == 2
    assert "changes no weights" in one_error_line(capsys)
    path = edits["rome"].save(tmp_path / "rome.safetensors")
    assert main(["sparsity", "--record", str(path), "--model", str(tiny_model_dir)]) == 2
    assert "was made on model" in one_error_line(capsys)


# ====================================================================== figures

def test_figures_write_pngs(tmp_path):
    from kelocate.plots.sparsity import draw_concentration_bars, draw_delta_heatmaps

    rng = np.random.default_rng(0)
    panels = {"ROME": np.abs(np.outer(rng.standard_normal(16), rng.standard_normal(40))),
              "FT-L": np.abs(rng.standard_normal((16, 40))) * 0.1}
    for log in (False, True):
        (png,) = draw_delta_heatmaps(panels, tmp_path / f"heat{log}", log=log)
        assert png.suffix == ".png" and png.stat().st_size > 1000
    values = {"rome": concentration_values([sparsity(hand_record())]),
              "ft-l": {"top-5 share": [0.2, 0.3], "top-1% share": [0.1, 0.2], "participation ratio": [300, 320],
                       "rank": [100, 120]}}
    (png,) = draw_concentration_bars(values, tmp_path / "bars")
    assert png.stat().st_size > 1000
    with pytest.raises(KelocateError, match="zero"):
        draw_delta_heatmaps({"none": np.zeros((2, 2))}, tmp_path / "zero")
