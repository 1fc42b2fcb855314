"""The weights study (projection and sparsity over many edits): the model is restored, every row is measured as
the single-edit probes measure it, the summaries follow the stated rules, the result round-trips, the figures
and the CLI write their files, and bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kelocate.errors import KelocateError
from kelocate.model import weights
from kelocate.studies import weights as study


@pytest.fixture(scope="module")
def small_run(organism):
    settings = study.WeightsSettings(methods=("rome", "ft-l", "adalora"), compared=("rome", "ft-l"), facts=3)
    before = weights.state_hash(organism)
    result = study.run_weights(organism, settings)
    assert weights.state_hash(organism) == before and result.restored
    return result


def test_rows_match_the_single_edit_probes(organism, small_run):
    """Each row's numbers are those of `project_edit` and `sparsity` on the same edit, made again by hand."""
    from kelocate.edit import registry
    from kelocate.locate_then_edit import locate_and_edit
    from kelocate.probes.projection import project_edit
    from kelocate.probes.sparsity import sparsity
    from kelocate.studies.known_facts import known_cases

    assert len(small_run.rows) == 9 and not any(r.error for r in small_run.rows)
    case = known_cases(organism, 3)[1]
    record = locate_and_edit(organism, registry.editor("rome"), [case.request])
    record.revert()
    row = next(r for r in small_run.rows if r.method == "rome" and r.fact == 1)
    projected = project_edit(organism, record)
    assert row.projection["layer"] == projected.layer
    for k in projected.ks:
        assert row.projection["top"]["after"]["any"][str(k)] == pytest.approx(projected.hit("top", "after", "any", k))
    measured = sparsity(record).parameters[0]
    assert row.matrices[0]["participation ratio"] == pytest.approx(measured.columns.participation_ratio, rel=1e-3)
    assert row.matrices[0]["rank"] == measured.rank.rank == 1
    adalora = [r for r in small_run.rows if r.method == "adalora"]
    assert all(r.projection is None and r.matrices for r in adalora)  # writes no down_proj: sparsity only


def test_summary_follows_its_rules(small_run):
    s = small_run.summary
    rome = s["methods"]["rome"]
    ok = [r for r in small_run.rows if r.method == "rome" and r.success]
    assert rome["success"] == len(ok) / 3
    common = [r for r in ok if r.fact in s["common_facts"]]
    assert rome["projection_common"]["n"] == len(common)
    mean = np.mean([r.projection["top"]["before"]["any"]["50"] for r in common])
    assert rome["projection_common"]["top"]["before"]["any"]["50"] == pytest.approx(mean)
    assert set(s["paper"]) == {"rome", "ft-l"}
    pr = {m: s["methods"][m]["concentration_mean"]["participation ratio"] for m in ("rome", "ft-l")}
    assert s["ft_l_denser_than_rome"].startswith("FT-L's dW is denser" if pr["ft-l"] > pr["rome"] else
                                                 "FT-L's dW is not denser")
    assert small_run.heatmap_fact in s["common_facts"]
    assert set(small_run.heatmaps) == {"rome", "ft-l", "adalora"}


def test_paper_checks_rule():
    def summary(b50, a50, a1, n=4):
        return {"n": n, "top": {"before": {"any": {"50": b50}}, "after": {"any": {"50": a50, "1": a1}}}}

    lines = study.paper_checks({"memit": summary(0.6, 0.7, 0.5), "rome": summary(0.2, 0.21, 0.1),
                                "ft-l": summary(0.2, 0.9, 0.1), "mend": summary(0.95, 1.0, 0.92)})
    assert lines["memit"].endswith("-> holds") and lines["rome"].endswith("-> holds")
    assert lines["ft-l"].endswith("-> does not hold") and lines["mend"].endswith("-> holds")
    assert study.paper_checks({"memit": summary(0.6, 0.62, 0.5)})["memit"].endswith("does not hold")
    assert study.paper_checks({"memit": summary(0.30, 0.35, 0.5)})["memit"].endswith("-> holds")  # exactly 5 points
    assert study.paper_checks({"mend": summary(0.85, 1.0, 0.95)})["mend"].endswith("does not hold")  # low before
    assert study.paper_checks({"mend": summary(0.95, 1.0, 0.85)})["mend"].endswith("does not hold")  # low Hit@1


def test_result_round_trip_and_figures(small_run, tmp_path):
    from kelocate.plots.weights import draw_weights

    json_path = tmp_path / "w.json"
    written = small_run.save(json_path)
    assert {p.name for p in written} == {"w.json", "w.npz"}
    back = study.WeightsResult.load(json_path)
    assert back.to_json() == json.loads(json_path.read_text())
    assert set(back.heatmaps) == set(small_run.heatmaps)
    np.testing.assert_allclose(back.heatmaps["rome"], small_run.heatmaps["rome"], rtol=1e-6)
    figures = draw_weights(back.to_json(), back.heatmaps, tmp_path)
    assert set(figures) == {"projection", "heatmaps", "concentration"}
    assert all(p.stat().st_size > 10_000 for files in figures.values() for p in files)
    with pytest.raises(KelocateError, match="not a weights result"):
        draw_weights({}, {}, tmp_path)


@pytest.mark.parametrize("kwargs, needle", [
    ({"facts": 0}, "at least 1 fact"),
    ({"methods": ("ice",)}, "changes no weights"),
    ({"methods": ("mend",), "compared": ()}, "needs a trained checkpoint"),
    ({"methods": ("rome",), "compared": ("memit",)}, "does not run"),
    ({"methods": ("nope",)}, "nope"),
])
def test_settings_refuse_bad_input(kwargs, needle):
    with pytest.raises(KelocateError, match=needle):
        study.WeightsSettings(**kwargs).check()


def test_a_model_without_a_world_needs_a_facts_file(tiny_model):
    with pytest.raises(KelocateError, match="--facts-file"):
        study.run_weights(tiny_model, study.WeightsSettings(methods=("rome",), compared=("rome",), facts=1))


def test_cli_refuses_mend_untrained_on_another_model(tiny_model_dir, tmp_path, capsys):
    from kelocate.cli import main

    assert main(["study", "weights", "--model", str(tiny_model_dir), "--out", str(tmp_path / "w")]) == 2
    assert "mend needs a trained checkpoint on this model" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_cli_writes_files_and_refuses_bad_input(tmp_path, capsys):
    from kelocate.cli import main

    assert main(["study", "weights", "--methods", "rome,ft-l", "--compared", "rome,ft-l", "--facts", "2",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ROME: paper: no increase" in out and "participation ratio" in out
    assert {p.name for p in tmp_path.iterdir()} >= {"weights.json", "weights.npz", "weights_projection.png",
                                                    "weights_heatmaps.png", "weights_concentration.png"}
    for args, needle in [(["--facts-file", str(tmp_path / "none.json")], "is not a file"),
                         (["--methods", "ice"], "changes no weights"), (["--facts", "0"], "--facts")]:
        assert main(["study", "weights", *args, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
