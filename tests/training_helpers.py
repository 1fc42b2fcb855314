"""The SIGKILL check the trained editors (MEND, SERAC) share: a child process trains a miniature, is killed
between two checkpoints, and the rerun must resume from the last one and end where an uninterrupted run
ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

CHILD = """
import sys, time, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from kelocate.loading import load_model
from {train_module} import train
from {test_module} import edits, mini

def progress(step, total, row):
    if step == 6:
        open({marker!r}, "w").close()
        time.sleep(60)  # killed here, between checkpoints 4 and 8

train(load_model({model!r}), edits(), {out!r}, mini(), progress=progress)
"""


def kill_at_step_6(train_module: str, test_module: str, model_dir: Path, out: Path, marker: Path) -> None:
    """Run `train` of `train_module` on the miniature of `test_module` (its `edits` and `mini`) in a child and
    SIGKILL it at step 6."""
    code = CHILD.format(tests=os.path.dirname(__file__), train_module=train_module, test_module=test_module,
                        marker=str(marker), model=str(model_dir), out=str(out))
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert child.poll() is None and time.time() < deadline, "the child did not reach step 6"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()


def assert_resumes_like_a_straight_run(train, model_dir: Path, tmp_path: Path, edits, mini, config_file: str,
                                       steps: int = 12) -> list[dict]:
    """Kill a training at step 6 (checkpoint at 4), rerun it and an uninterrupted one on one thread, and check
    that the two loss logs agree step for step. Returns the resumed run's log."""
    from kelocate.loading import load_model

    out = tmp_path / "killed"
    kill_at_step_6(train.__module__, edits.__module__, model_dir, out, tmp_path / "marker")
    assert json.loads((out / config_file).read_text())["trained_steps"] == 4
    torch.set_num_threads(1)
    try:
        model = load_model(model_dir)
        resumed = train(model, edits(), out, mini())
        straight = train(model, edits(), tmp_path / "straight", mini())
    finally:
        torch.set_num_threads(int(os.environ.get("KELOCATE_TEST_THREADS") or os.environ["OMP_NUM_THREADS"]))
    assert resumed["resumed_from"] == 4 and straight["resumed_from"] == 0
    a = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "straight" / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in a] == list(range(1, steps + 1))
    for x, y in zip(a, b, strict=True):  # same random draws and optimiser states: the same run
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4, abs=1e-6)
    return a
