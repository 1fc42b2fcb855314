"""The README's Python examples run as written (on the shipped organism)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    from kelocate.organism import checkpoint_dir

    if not (checkpoint_dir() / "config.json").is_file():
        pytest.skip("the organism checkpoint is not built")
    monkeypatch.setenv("KELOCATE_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # files the examples write (an edit record) land here
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    assert "Japan" in out
    assert 0.0 <= namespace["p"].max() <= 1.0
    assert namespace["result"].clean_score > 0.5
    assert namespace["knocked"].item() < 0.5 * namespace["result"].clean_score  # the knockout bites
    assert "France" in out and (tmp_path / "smap.safetensors").is_file()  # the edit example edited and saved
    assert not namespace["record"].applied
