"""The locate-vs-edit study: the correlations agree with a plain loop on hand-made numbers,
a tiny organism run is well formed and leaves the model as it was, the CLI writes its files and the figure a PNG."""

from __future__ import annotations

import json
import math

import pytest

from kelocate.errors import KelocateError
from kelocate.model import weights
from kelocate.studies.locate_vs_edit import (
    FactRow,
    LocateVsEditResult,
    LocateVsEditSettings,
    correlation,
    correlations,
    summarise,
)

EFFECTS = [[0.1, 0.5, 0.2, 0.9], [0.3, 0.0, 0.4, 0.2], [0.6, 0.6, 0.1, 0.8]]
SCORES = [[0.0, 1.0, 0.5, 0.75], [1.0, 0.25, 0.0, 0.5], [1.0, 1.0, 1.0, 1.0]]  # the last fact is constant


def _pearson(x: list[float], y: list[float]) -> float:
    """Pearson r by its definition."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def _ranks(x: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def test_correlations_match_a_plain_loop():
    xs = [v for row in EFFECTS for v in row]
    ys = [v for row in SCORES for v in row]
    pooled = correlation(xs, ys)
    assert pooled["pearson"] == pytest.approx(_pearson(xs, ys))
    assert pooled["spearman"] == pytest.approx(_pearson(_ranks(xs), _ranks(ys)))
    assert pooled["n"] == 12
    both = correlations(EFFECTS, SCORES)
    assert both["pooled"]["pearson"] == pytest.approx(pooled["pearson"])
    assert both["within_facts"] == 2 and both["constant_facts"] == 1
    assert both["within_pearson"] == pytest.approx((_pearson(EFFECTS[0], SCORES[0])
                                                    + _pearson(EFFECTS[1], SCORES[1])) / 2)
    assert both["within_spearman"] == pytest.approx(sum(_pearson(_ranks(EFFECTS[i]), _ranks(SCORES[i]))
                                                        for i in range(2)) / 2)
    assert math.isnan(correlation([1, 2, float("nan")], [1, 2, 3])["pearson"])  # 2 finite pairs: no r
    with pytest.raises(KelocateError, match="one score per effect"):
        correlation([1, 2, 3], [1, 2])


def test_summary_auto_vs_fixed():
    facts = [FactRow(f"p{i}", "s", "a", "t", "x", True, e, s, s, s)
             for i, (e, s) in enumerate(zip(EFFECTS, SCORES, strict=True))]
    assert [f.auto_layer for f in facts] == [3, 2, 3]
    summary = summarise(facts, fixed_layer=0, n_layers=4)
    success = summary["metrics"]["success"]
    assert success["auto_mean"] == pytest.approx((0.75 + 0.0 + 1.0) / 3)
    assert success["fixed_mean"] == pytest.approx((0.0 + 1.0 + 1.0) / 3)
    assert (success["auto_wins"], success["ties"], success["fixed_wins"]) == (1, 1, 1)
    assert summary["auto_layer_counts"] == [0, 0, 1, 2] and summary["auto_is_fixed"] == 0
    assert summary["per_layer"]["effect"][1] == pytest.approx((0.5 + 0.0 + 0.6) / 3)
    with pytest.raises(KelocateError, match="at least 1 fact"):
        LocateVsEditSettings(facts=0).check()


@pytest.fixture(scope="module")
def tiny(organism):
    """Two facts on the organism, 2 noise draws, a small key-statistics sample."""
    from kelocate.studies.locate_vs_edit import run_locate_vs_edit

    start = weights.state_hash(organism)
    result = run_locate_vs_edit(organism, LocateVsEditSettings(facts=2, samples=2,
                                                               overrides={"mom2_n_samples": 500}))
    return result, start, weights.state_hash(organism)


def test_tiny_organism_run_is_well_formed(tiny, organism, tmp_path):
    result, start, end = tiny
    assert start == end and result.restored
    assert result.token == "last" and result.fixed_layer == organism.n_layers - 1
    assert len(result.facts) == 2
    for fact in result.facts:
        for series in (fact.effect, fact.success, fact.paraphrase, fact.target_prob):
            assert len(series) == organism.n_layers
        assert all(0.0 <= v <= 1.0 for v in fact.success + fact.target_prob if not math.isnan(v))
        assert 0 <= fact.auto_layer < organism.n_layers
    assert set(result.summary["metrics"]) == {"success", "paraphrase", "target_prob"}
    back = LocateVsEditResult.from_json(json.loads(json.dumps(result.to_json(), allow_nan=True)))
    assert back.to_json() == json.loads(json.dumps(result.to_json(), allow_nan=True))
    with pytest.raises(KelocateError, match="not a locate-vs-edit result"):
        LocateVsEditResult.from_json({"format": "other"})


def test_figure_writes_a_png(tiny, tmp_path):
    from kelocate.plots.locate_vs_edit import draw_locate_vs_edit

    (path,) = draw_locate_vs_edit(tiny[0].to_json(), tmp_path / "fig", ["png"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(KelocateError, match="not a locate-vs-edit result"):
        draw_locate_vs_edit({}, tmp_path / "bad")


def test_cli_tiny_run(tiny, tmp_path, capsys):
    from kelocate.cli import main

    out = tmp_path / "lve"
    assert main(["study", "locate-vs-edit", "--facts", "1", "--samples", "2", "--mom2-samples", "500",
                 "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "kelocate-locate-vs-edit" and len(data["facts"]) == 1 and data["restored"]
    assert (out / "locate_vs_edit.json").is_file() and (out / "locate_vs_edit.png").stat().st_size > 0
    assert main(["study", "locate-vs-edit", "--facts", "1", "--formats", "gif", "--out", str(out)]) == 2
