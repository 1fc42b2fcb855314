"""The study runner's Ray executor on the organism: two Ray workers write the same rows as the serial runner
(in completion order), a unit that raises is retried once and then recorded as failed while the run goes on,
and a worker killed mid-run is replaced without losing a unit."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray", reason="the Ray executor needs ray: pip install 'kelocate[ray]'")

from kelocate.studies.knowedit.config import StudyConfig, check_config  # noqa: E402
from kelocate.studies.knowedit.runner import run_study  # noqa: E402
from kelocate.studies.knowedit.store import RESULTS  # noqa: E402


@pytest.fixture
def one_thread():
    torch.set_num_threads(1)  # the serial run's numbers equal the Ray workers' (one thread each)
    yield
    torch.set_num_threads(int(os.environ.get("KELOCATE_TEST_THREADS") or os.environ.get("OMP_NUM_THREADS") or 2))


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / RESULTS).read_text().splitlines()]


def study(**overrides) -> StudyConfig:
    settings = dict(methods=["ft-m", "ice"], tasks=["ZsRE", "Sanitation"], cases=2, generation=False,
                    fluency=False) | overrides
    return check_config(StudyConfig(**settings))


def test_ray_writes_the_serial_rows(tmp_path, one_thread):
    config = study()
    seen: list[tuple[int, int]] = []
    ray_run = run_study(config, tmp_path / "ray", executor="ray", workers=2,
                        progress=lambda done, total, detail: seen.append((done, total)))
    serial = run_study(config, tmp_path / "serial")
    assert ray_run == {**serial, "out": str(tmp_path / "ray")} and ray_run["ran"] == 8 and ray_run["failed"] == 0
    assert seen == [(k, 8) for k in range(1, 9)]
    by_ray, by_serial = rows(tmp_path / "ray"), rows(tmp_path / "serial")
    assert sorted(by_ray, key=lambda r: r["unit"]) == sorted(by_serial, key=lambda r: r["unit"])
    assert all(r["status"] == "ok" for r in by_ray)
    timings = (tmp_path / "ray" / "timings.jsonl").read_text().splitlines()
    assert [json.loads(t)["unit"] for t in timings] == [r["unit"] for r in by_ray]
    again = run_study(config, tmp_path / "ray", executor="ray")  # resumes: nothing left, Ray not even started
    assert again["ran"] == 0 and again["skipped"] == 8


def study_workers() -> list[int]:
    """The PIDs of this process's Ray study actors (descendants titled ray::StudyWorker)."""

    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    out = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or not (entry / "cmdline").read_bytes().startswith(b"ray::StudyWorker"):
                continue
            pid = int(entry.name)
            while pid > 1 and pid != os.getpid():
                pid = parent(pid)
        except OSError:  # the process ended meanwhile
            continue
        if pid == os.getpid():
            out.append(int(entry.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker to kill through /proc")
def test_a_raising_unit_is_recorded_failed_and_a_killed_worker_replaced(tmp_path, one_thread):
    # a broken template raises KeyError inside the edit (not a KelocateError, so run_unit does not catch it)
    config = study(tasks=["ZsRE"], editors={"ice": {"template": "Imagine that {oops}\n"}})
    killed: list[int] = []
    lines: list[str] = []

    def progress(done: int, total: int, detail: str) -> None:
        if not killed:  # kill a worker once, after the first unit (the next units are in flight or queued)
            pids = study_workers()
            assert len(pids) == 2
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    summary = run_study(config, tmp_path / "run", executor="ray", workers=2, progress=progress, log=lines.append)
    print("\n".join(lines))  # shown when the test fails
    assert killed and summary["ran"] == 4 and summary["failed"] == 2
    by_unit = {r["unit"]: r for r in rows(tmp_path / "run")}
    assert len(by_unit) == 4  # no unit lost or duplicated
    for key, row in by_unit.items():
        if row["method"] == "ft-m":
            assert row["status"] == "ok" and row["scores"], key
        else:
            assert row["status"] == "failed" and row["error"] == "KeyError: 'oops'", key
            assert row["cases"] and all(len(pair) == 2 for pair in row["cases"]) and "scores" not in row
    assert any("died" in line for line in lines), lines  # the kill was noticed, and the worker replaced
    assert sum("retrying" in line for line in lines) >= 2  # each ice unit was tried twice


def test_without_ray_the_executor_is_one_line_of_error(tmp_path, monkeypatch, capsys):
    from kelocate.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    config = tmp_path / "study.toml"
    config.write_text('[study]\nmethods = ["ice"]\ntasks = ["ZsRE"]\ncases = 1\n')
    assert main(["study", "run", str(config), "--out", str(tmp_path / "out"), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "pip install 'kelocate[ray]'" in err
