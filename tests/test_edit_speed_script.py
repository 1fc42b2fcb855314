"""benchmarks/edit_speed.py runs end to end at --quick sizes (random model only) and ends with its JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "edit_speed.py"


@pytest.mark.slow
def test_edit_speed_quick_prints_a_table_and_a_json_line():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--model", "random12", "--threads", "1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith("model ") and "peak RSS MB" in line for line in lines)
    figures = json.loads(lines[-1])
    fig = figures["random2"]  # --quick: a 2-layer random model instead of random12
    assert fig["n_layers"] == 2
    for key in ("stats_one_pass_s", "stats_per_layer_s", "stats_per_layer_stop_s", "stats_ratio",
                "memit_batch_s_per_edit", "rome_sequential_s_per_edit"):
        assert fig[key] > 0, key
    assert fig["max_abs_diff"] == 0.0 and fig["max_abs_diff_stop"] == 0.0  # same sums, same order
    assert fig["counts_equal"] and fig["counts_equal_stop"]
    assert fig["memit_batch_weights_restored"] and fig["rome_sequential_weights_restored"]
    assert fig["memit_batch_requests"] == fig["rome_sequential_requests"] == 4
    assert set(fig["peak_rss_mb"]) == {"stats_one_pass", "stats_per_layer", "stats_per_layer_stop", "memit_batch",
                                       "rome_sequential"}
