"""CLI plumbing: `kelocate predict` and the one-line, exit-code-2 handling of user mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kelocate.cli import main


def test_predict_prints_top_tokens(tiny_model_dir, capsys):
    assert main(["predict", "SMAP was created in", "--model", str(tiny_model_dir), "--top-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["top_k"]) == 3
    probs = [row["prob"] for row in out["top_k"]]
    assert probs == sorted(probs, reverse=True)


@pytest.mark.parametrize("argv,needle", [
    (["predict", "x", "--model", "/no/such/dir"], "neither a local directory"),
    (["predict", "x", "--top-k", "many"], "--top-k"),
    (["predict", "x", "--top-k", "0"], "--top-k"),
    (["predict"], "Missing argument"),
    (["no-such-command"], "No such command"),
    (["predict", "x", "--no-such-option"], "No such option"),
])
def test_user_mistakes_give_one_line_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error:") and needle in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kelocate.cli", "predict", "x", "--model", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    assert "predict" in capsys.readouterr().out


def test_train_has_one_command_per_trainable_method_of_the_registry(capsys):
    from kelocate.edit import registry

    for name in registry.TRAINABLE:
        entry = registry.method(name)
        assert main(["train", name, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert f"kelocate train {name}" in out and entry.label in out and "--out" in out and "--edits" in out
        assert ("--draws" in out) == (entry.training_draws > 1)


def _unwritable_outs(tmp_path) -> list[str]:
    """--out folders that cannot be created: below a file, and /proc/x where there is a /proc."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    return [str(blocker / "x")] + (["/proc/x"] if os.path.isdir("/proc/self") else [])


@pytest.mark.parametrize("argv", [
    ["trace", "SMAP was created in", "--kind", "hidden", "--samples", "2"],  # on the organism
    ["klob"],
])
def test_unwritable_out_is_one_line_and_exit_2(argv, tmp_path, capsys):
    for out in _unwritable_outs(tmp_path):
        assert main([*argv, "--out", out]) == 2
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1, captured.err
        assert lines[0].startswith("error:") and repr(out) in lines[0] and "choose another --out" in lines[0]
        assert "Traceback" not in captured.err + captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # nothing half-written


def test_console_script_unwritable_out_has_no_traceback(tmp_path):
    out = _unwritable_outs(tmp_path)[-1]
    proc = subprocess.run([sys.executable, "-m", "kelocate.cli", "trace", "SMAP was created in", "--kind", "hidden",
                           "--samples", "2", "--out", out], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr


def test_model_owner_name_resolves_from_the_local_hub_cache(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """`--model some-owner/some-model` is looked up in the local Hugging Face cache (a test-built one)."""
    import huggingface_hub.constants

    revision = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "hub" / "models--some-owner--some-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    for f in tiny_model_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["predict", "SMAP was created in", "--model", "some-owner/some-model", "--json"]) == 0
    via_hub = json.loads(capsys.readouterr().out)
    assert main(["predict", "SMAP was created in", "--model", str(tiny_model_dir), "--json"]) == 0
    direct = json.loads(capsys.readouterr().out)
    assert via_hub["top_k"] == direct["top_k"] and via_hub["model"] == "some-owner/some-model"


def test_models_list_and_unknown_fetch(capsys):
    assert main(["models", "list"]) == 0
    assert "smollm2" in capsys.readouterr().out
    assert main(["models", "fetch", "gpt-17"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "unknown model 'gpt-17'" in err[0]
