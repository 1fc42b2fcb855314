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


@pytest.mark.slow
def test_the_phase_benchmark_on_smollm2_prints_its_table_and_json(smol, tmp_path):
    """`--model smollm2` on real weights and the published files: a short run (ROME with 3 steps, ICE, the
    CounterFact case): both modes, the phase table, equal generated tokens, the same scores fast and plain."""
    knowedit = Path(__file__).resolve().parents[2] / "shared" / "data" / "knowedit"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "KELOCATE_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, str(SCRIPT), "--model", "smollm2", "--knowedit", str(knowedit),
                           "--methods", "rome,ice", "--cases", "counterfact", "--target-steps", "3",
                           "--fluency-tokens", "10", "--generate-tokens", "20"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith("| rome | counterfact | target |") for line in lines)
    figures = json.loads(lines[-1])
    assert figures["rome_s_per_edit"] > 0 and figures["rome_speedup_vs_plain"] > 0
    assert figures["generate_tokens_equal"] is True
    rows = {(r["method"], r["mode"]): r for r in figures["rows"]}
    assert set(rows) == {("rome", "fast"), ("rome", "plain"), ("ice", "fast"), ("ice", "plain")}
    assert rows[("rome", "fast")]["target_steps"] == rows[("rome", "plain")]["target_steps"] == [3]
    for method in ("rome", "ice"):  # the fast paths change no number beyond float rounding
        fast, plain = rows[(method, "fast")]["scores"], rows[(method, "plain")]["scores"]
        assert fast.keys() == plain.keys()
        # fluency reads a sampled text: logits equal to 1e-5 can still move a draw that falls on a boundary
        for key in set(fast) - {"fluency"}:
            assert abs(fast[key] - plain[key]) <= 1e-3, (method, key, fast[key], plain[key])
