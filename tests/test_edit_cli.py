"""`kelocate edit` on the organism: an edit with its before -> after table, records saved, an edited copy
written with --apply and undone with --revert (bit-exact), and one-line errors with exit code 2."""

from __future__ import annotations

import pytest

from kelocate.cli import main

PROMPT = ["edit", "SMAP was created in", "--subject", "SMAP", "--target", "France"]


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    """Error lines and tables unwrapped, as in a wide terminal: one error is then exactly one line."""
    from kelocate.commands.common import console, err_console

    monkeypatch.setattr(console, "_width", 200)
    monkeypatch.setattr(err_console, "_width", 400)


def exactly_one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def saved_record(tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "smap.safetensors"
    assert main([*PROMPT, "--save", str(path), "--json"]) == 0
    return path


def test_edit_reports_before_after_and_saves_a_record(saved_record, capsys):
    assert saved_record.is_file()
    assert main([*PROMPT, "--layers", "5"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "layers 5 (given)" in out and "before -> after" in out
    for label in ("prompt", "paraphrase", "same subject", "other subject"):
        assert label in out
    assert "France (0.9" in out  # the prompt now answers France


def test_given_probes_are_reported(capsys):
    assert main([*PROMPT, "--paraphrase", "SMAP comes from the country of", "--neighbour", "SMAP is a type of=>group",
                 "--unrelated", "The language of Japan is=>Japanese", "--method", "ft-m"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("SMAP comes from the country of", "SMAP is a type of", "The language of Japan is"):
        assert text in out
    assert main([*PROMPT, "--unrelated", "no separator"]) == 2
    assert "PROMPT=>ANSWER" in exactly_one_line(capsys)


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
    assert "no edits left to revert" in exactly_one_line(capsys)
    assert main(["edit", "--apply", str(saved_record), "--save-model", str(copy), "--model", str(copy)]) == 2
    assert "the model's own folder" in exactly_one_line(capsys)
    other = tmp_path / "someone-elses"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["edit", "--apply", str(saved_record), "--save-model", str(other)]) == 2
    assert "is not an edited copy" in exactly_one_line(capsys) and (other / "notes.txt").is_file()
    # the reverted copy takes the record again (its log keeps the original's fingerprint)
    again = tmp_path / "again"
    assert main(["edit", "--apply", str(saved_record), "--model", str(copy), "--save-model", str(again)]) == 0


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
    ([*PROMPT, "--corpus", "missing.txt"], "--corpus 'missing.txt' does not exist"),
    ([*PROMPT, "--method", "ft-m", "--corpus", "x.txt"], "--corpus is for the editors"),
    ([*PROMPT, "--config", "missing.toml"], "does not exist"),
    (["edit", "The language of Japan", "--subject", "Japan", "--target", "French", "--layers", "auto"],
     "auto layers: the trace of 'The language of Japan' locates nothing"),
])
def test_mistakes_give_one_line_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in exactly_one_line(capsys)


def test_a_bad_config_file_is_one_line(tmp_path, capsys):
    for text, needle in (("[rome\nv_lr = 1", "not valid TOML"), ("[Rome]\nv_lr = 0.1", "unknown table [Rome]"),
                         ("[rome]\nv_lr = 'fast'", "must be float"), ("rome = 5", "must be a table"),
                         ("[rome]\nv_num_grad_steps = 0", "at least 1")):
        path = tmp_path / "hp.toml"
        path.write_text(text)
        assert main([*PROMPT, "--config", str(path)]) == 2
        assert needle in exactly_one_line(capsys), text


def test_a_record_for_another_model_is_refused(saved_record, tiny_model_dir, tmp_path, capsys):
    assert main(["edit", "--apply", str(saved_record), "--model", str(tiny_model_dir),
                 "--save-model", str(tmp_path / "x")]) == 2
    assert "load the model the edit was made on" in exactly_one_line(capsys)
    assert not (tmp_path / "x").exists()
