"""`kelocate edit` on the organism: an edit with its before -> after table, records saved, an edited copy
written with --apply and undone with --revert (bit-exact), and one-line errors with exit code 2."""

from __future__ import annotations

import pytest

from kelocate.cli import main

PROMPT = ["edit", "SMAP was created in", "--subject", "SMAP", "--target", "France"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "Traceback" not in err
    assert len(err.splitlines()) == 1 or "\n" not in " ".join(err.split())
    return err


@pytest.fixture(scope="module")
def saved_record(tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "smap.safetensors"
    assert main([*PROMPT, "--save", str(path), "--json"]) == 0
    return path


def test_edit_reports_before_after_and_saves_a_record(saved_record, capsys, monkeypatch):
    from kelocate.commands.common import console

    assert saved_record.is_file()
    monkeypatch.setattr(console, "_width", 200)  # a table row per line, as in a wide terminal
    assert main([*PROMPT, "--layers", "5"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "layers 5 (given)" in out and "before -> after" in out
    for label in ("prompt", "paraphrase", "same subject", "other subject"):
        assert label in out
    assert "France (0.9" in out  # the prompt now answers France


def test_apply_writes_an_edited_copy_and_revert_restores_it_exactly(saved_record, tmp_path, capsys):
    from kelocate.loading import load_model
    from kelocate.model.weights import state_hash

    copy = tmp_path / "edited"
    assert main(["edit", "--apply", str(saved_record), "--save-model", str(copy)]) == 0
    edited = load_model(copy)
    assert edited.top_k("SMAP was created in", 1)[0][0].strip() == "France"
    assert main(["edit", "--revert", str(saved_record), "--model", str(copy)]) == 0
    assert state_hash(load_model(copy)) == state_hash(load_model())
    assert main(["edit", "--revert", str(saved_record), "--model", str(copy)]) == 2  # nothing left to revert
    assert "not an edited copy" in one_error_line(capsys)


@pytest.mark.parametrize(("argv", "needle"), [
    (["edit", "SMAP was created in", "--subject", "Sony", "--target", "France"], "does not occur"),
    ([*PROMPT, "--layers", "9"], "layer 9 does not exist"),
    ([*PROMPT, "--layers", "3-1"], "runs backwards"),
    ([*PROMPT, "--method", "bogus"], "unknown edit method"),
    ([*PROMPT, "--save", "x.bin"], ".safetensors"),
    (["edit", "SMAP was created in", "--subject", "SMAP"], "needs PROMPT, --subject and --target"),
    (["edit", "--apply", "missing.safetensors", "--save-model", "out"], "does not exist"),
    (["edit", "--apply", "x.safetensors"], "--save-model"),
    ([*PROMPT, "--method", "rome", "--neurons", "1:2"], "--neurons is for --method kn"),
    ([*PROMPT, "--method", "kn", "--neurons", "1-2"], "LAYER:INDEX"),
])
def test_mistakes_give_one_line_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in one_error_line(capsys)


def test_a_record_for_another_model_is_refused(saved_record, tiny_model_dir, tmp_path, capsys):
    assert main(["edit", "--apply", str(saved_record), "--model", str(tiny_model_dir),
                 "--save-model", str(tmp_path / "x")]) == 2
    assert "load the model the edit was made on" in one_error_line(capsys)
    assert not (tmp_path / "x").exists()
