"""`kelocate trace`: a run writes the result and the heatmaps; user errors give one line and exit code 2."""

from __future__ import annotations

import json

import pytest
from trace_helpers import sharp_model_dir

from kelocate.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return sharp_model_dir(tmp_path_factory.mktemp("cli-model"), n_layers=3, seed=2)


def test_trace_writes_result_and_three_heatmaps(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "trace",
            "SMAP was created in the city of",
            "--model",
            str(model_dir),
            "--samples",
            "3",
            "--out",
            str(out),
            "--format",
            "png,pdf",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    stem = "smap_was_created_in_the_city_of"
    for kind in ("hidden", "mlp", "attn"):
        for fmt in ("png", "pdf"):
            assert (out / f"{stem}_{kind}.{fmt}").stat().st_size > 1000
    meta = json.loads((out / f"{stem}.json").read_text())
    assert meta["subject"] == "SMAP" and meta["config"]["samples"] == 3 and (out / f"{stem}.npz").is_file()
    assert "clean p" in captured.out
    # a random model's trace may locate nothing: then it says why instead of printing layers
    assert ("located layers" in captured.out) == meta["valid"] and ("not located:" in captured.out) != meta["valid"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_trace_json_and_severed(model_dir, tmp_path, capsys):
    code = main(
        [
            "trace",
            "the music of Paris",
            "--subject",
            "Paris",
            "--model",
            str(model_dir),
            "--samples",
            "2",
            "--kind",
            "hidden",
            "--severed",
            "mlp",
            "--out",
            str(tmp_path),
            "--format",
            "png",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert set(data["grids"]) == {"hidden", "hidden_severed_mlp"} and data["subject_span"][1] == len(
        data["tokens"]
    )
    assert len(data["grids"]["hidden"]) == len(data["tokens"])
    assert any(w.endswith("_hidden_severed_mlp.png") for w in data["written"])


def test_trace_dataset_average(model_dir, tmp_path, capsys):
    data = tmp_path / "klob_c.jsonl"
    data.write_text(
        json.dumps(
            {
                "prompts": ["SMAP was created in _", "the music of SMAP is _"],
                "knowledge": ["SMAP", "created_(P1)", "Japan"],
            }
        )
        + "\n"
    )
    out = tmp_path / "avg"
    args = ["trace", "--dataset", str(data), "--model", str(model_dir), "--samples", "2", "--kind", "mlp"]
    code = main([*args, "--out", str(out), "--format", "png", "--all-facts", "--include-invalid"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "clearest facts at the last subject token" in captured.out and "SMAP was created in" in captured.out
    code = main([*args, "--out", str(out), "--format", "png", "--json", "--all-facts", "--include-invalid"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads((out / "average_klob_c.json").read_text())
    assert result["kinds"] == ["mlp"] and (out / "average_klob_c.png").is_file()
    assert result["n_facts"] == 2 and json.loads(captured.out)["written"]
    clearest = result["clearest"]["mlp"]["last subject token"]
    assert {c["prompt"] for c in clearest} == {"SMAP was created in", "the music of SMAP is"}
    # a random model knows none of them: without --all-facts nothing is traced, and nothing is written
    code = main(
        [
            "trace",
            "--dataset",
            str(data),
            "--model",
            str(model_dir),
            "--samples",
            "2",
            "--out",
            str(tmp_path / "none"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "none of the 2 facts" in err and not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["SMAP was created in", "--subject", "Paris"], "does not occur in the prompt"),
        (["SMAP was created in", "--kind", "neurons"], "unknown trace kind"),
        (["SMAP was created in", "--noise", "loud"], "bad noise"),
        (["SMAP was created in", "--format", "gif"], "unknown figure format"),
        (["SMAP was created in", "--severed", "hidden"], "unknown severed site"),
        (["was created in the"], "--subject"),
        ([], "give a prompt"),
        (["SMAP was created in", "--dataset", "missing.json"], "give either a prompt or --dataset"),
        (["--dataset", "missing.json"], "does not exist"),
    ],
)
def test_user_errors_are_one_line_exit_2(model_dir, tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    code = main(["trace", *args, "--model", str(model_dir), "--out", str(out), "--samples", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_bad_model_path(tmp_path, capsys):
    code = main(
        ["trace", "SMAP was created in", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nope" in err
    assert not (tmp_path / "o").exists()
