"""A study's folder: `study.json` (the resolved config and the environment), `results.jsonl` (one JSON line
per finished unit) and `timings.jsonl`.

Finished units are appended to `results.jsonl` one line at a time (written, flushed and fsynced); a rerun
skips the units already there, and a line torn by a kill is cut off before anything is appended, so a
SIGKILL at any moment loses at most the units in flight. Result lines hold only what the run computed (no
timings), so a killed and resumed run writes the same file as an uninterrupted one; timings go to
`timings.jsonl`. Only one process writes (the serial runner, or the Ray driver). A folder made with another
config is refused.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kelocate.atomic import os_errors, write_text
from kelocate.data.records import parse_lines
from kelocate.errors import KelocateError
from kelocate.studies.knowedit.config import same_config

RESULTS, TIMINGS, STUDY = "results.jsonl", "timings.jsonl", "study.json"
DAMAGED = "the results file was edited by hand or damaged: delete that line (its unit reruns)"


class ResultsStore:
    """results.jsonl: one JSON object per finished unit, appended atomically line by line."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / RESULTS
        self.timings = folder / TIMINGS

    def rows(self, repair: bool = False) -> list[dict]:
        """The finished units' rows. A torn last line (a kill mid-write) is left out; `repair` (the writer,
        before it appends) also cuts it off the file. Readers never cut: a line being written right now
        looks torn too. The complete lines are parsed by the one record reader (`data/records.py`): blank
        lines are skipped, a line that is not JSON is one error `results.jsonl:N: not valid JSON (...); the
        results file was edited by hand ...`."""
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data) and repair:
            with os_errors(self.path):
                with open(self.path, "r+b") as handle:
                    handle.truncate(end)
        lines = enumerate(data[:end].split(b"\n"), 1)
        return [record.value for record in parse_lines(lines, self.path, DAMAGED)]

    def append(self, row: dict, seconds: float) -> None:
        """Append one finished unit's row (fsynced before this returns) and its time."""
        line = (json.dumps(row, sort_keys=True) + "\n").encode()
        with os_errors(self.path):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = 0
                while written < len(line):  # a short write (a full disk raises) continues where it stopped
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            finally:
                os.close(fd)
            with open(self.timings, "a") as handle:
                handle.write(json.dumps({"unit": row["unit"], "seconds": round(seconds, 3)}) + "\n")


def check_folder(folder: Path, resolved: Mapping[str, Any]) -> None:
    """Refuse a folder that holds a run of another config (before anything is loaded or written)."""
    study_file = folder / STUDY
    if study_file.is_file() and not same_config(json.loads(study_file.read_text()).get("config", {}), resolved):
        raise KelocateError(f"{folder} holds a study run with another config; pass another --out (or the same "
                            "config to resume it)")


def open_folder(folder: Path, resolved: Mapping[str, Any], model) -> ResultsStore:
    """Create the folder, save the config and the environment in study.json (the first time) and return its
    store."""
    with os_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    study_file = folder / STUDY
    if not study_file.is_file():
        write_text(study_file, json.dumps({"config": dict(resolved), "environment": environment(model)}, indent=2))
    return ResultsStore(folder)


def environment(model) -> dict[str, Any]:
    """Package versions, the device and the model, saved beside the results."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    packages = {}
    for name in ("kelocate", "torch", "transformers", "transformer-lens", "peft", "numpy"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": packages,
            "device": str(model.device), "dtype": str(model.dtype), "model": model.name,
            "fingerprint": model.fingerprint, "threads": torch.get_num_threads()}


def study_label(path: str | Path) -> str:
    """A short name for a results folder in a side-by-side table: the model it ran (study.json), else the
    folder's name."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        return str(json.loads((folder / STUDY).read_text())["environment"]["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return folder.name


def read_results(path: str | Path) -> list[dict]:
    """The rows of a results file (a folder or the results.jsonl itself), one per unit: its last (a failed
    unit retried with --retry-failed has two)."""
    path = Path(path)
    store = ResultsStore(path if path.is_dir() else path.parent)
    if not store.path.is_file():
        raise KelocateError(f"no {RESULTS} in {str(path)!r}; pass the --out folder of `kelocate study run`")
    return list({row["unit"]: row for row in store.rows()}.values())
