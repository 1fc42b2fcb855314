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
