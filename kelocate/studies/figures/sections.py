"""The sections of the figures report: per figure, how its data is computed, drawn and described.

A `Step` computes JSON data from the model (the expensive part, cached by `figures.run`), draws its figures
from that data alone, and describes them: a caption saying what the figure shows and how it was made, the
numbers behind it (small tables) and the paper's number where one exists. Steps that need something a model
lacks (the organism's world, KLoB files) say so in `unavailable` instead of failing the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kelocate.errors import KelocateError

Table = tuple[list[str], list[list[str]]]  # header, rows


@dataclass
class FiguresSettings:
    """The size of each section: facts traced for the averaged trace, KLoB records, the KnowEdit study's cases
    per task, recovery facts and rounds, locate-vs-edit and weights facts; noise draws per traced cell; the
    facts file for a model without a world; trained checkpoints (method -> folder)."""

    trace_facts: int = 40
    samples: int = 10
    klob_limit: int = 20
    study_cases: int = 3
    recovery_facts: int = 20
    recovery_rounds: int = 5
    locate_facts: int = 50
    weights_facts: int = 20
    seed: int = 0
    facts_file: str | None = None
    klob_data: str | None = None
    trained: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        for name in ("trace_facts", "samples", "klob_limit", "study_cases", "recovery_facts", "recovery_rounds",
                     "locate_facts", "weights_facts"):
            if getattr(self, name) < 1:
                raise KelocateError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.klob_limit < 2:
            raise KelocateError(f"--klob-limit must be at least 2, got {self.klob_limit}")
        for label, path in (("--facts-file", self.facts_file), ("--klob-data", self.klob_data)):
            if path is not None and not Path(path).exists():
                raise KelocateError(f"{label} {path!r} does not exist; pass an existing file or folder")


@dataclass
class Context:
    """What every step works with: the model, the settings, the output folder and a log."""

    model: Any
    settings: FiguresSettings
    folder: Path
    log: Callable[[str], None] = lambda text: None

    @property
    def organism(self) -> bool:
        return bool(self.model.provenance.is_organism)


@dataclass
class Description:
    """What the report says about one section's figures."""

    caption: str
    tables: list[Table] = field(default_factory=list)
    paper: str | None = None
    notes: list[str] = field(default_factory=list)
    answer: str | None = None  # the one-line answer the section gives, for the report's summary


@dataclass(frozen=True)
class Step:
    """One section: `key(ctx)` names what its data depends on (a changed key recomputes), `compute(ctx)` makes
    the data, `draw(data, figures, data_dir)` the figures (from the data, and files the compute left in
    `data_dir`), `describe(data)` the text; `unavailable(ctx)` says why the
    section cannot run on this model (None when it can)."""

    name: str
    title: str
    key: Callable[[Context], dict[str, Any]]
    compute: Callable[[Context], dict[str, Any]]
    draw: Callable[[Mapping[str, Any], Path, Path], list[Path]]
    describe: Callable[[Mapping[str, Any]], Description]
    unavailable: Callable[[Context], str | None] = lambda ctx: None


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number for a table: '-' for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) if isinstance(value, (int, float, np.floating)) else str(value)


def pct(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.0f}%"


def needs_facts(ctx: Context) -> str | None:
    if ctx.organism or ctx.settings.facts_file:
        return None
    return "needs facts the model knows: pass --facts-file (a KnowEdit or CounterFact file)"


def peak_rows(effects: Mapping[str, Mapping[str, Any]], kinds: Sequence[str], groups: Sequence[str]) -> list[list[str]]:
    """Per token group, per kind: the peak layer of the mean effect and its value."""
    rows = []
    for group in groups:
        cells = [group]
        for kind in kinds:
            mean = effects[kind][group]["mean"]
            if mean is None:
                cells.append("-")
                continue
            values = np.array([np.nan if v is None else v for v in mean], dtype=float)
            j = int(np.nanargmax(values))
            cells.append(f"layer {j} ({values[j]:+.3f})")
        rows.append(cells)
    return rows


@dataclass
class Section:
    """One section of the report as made: its figures and description, or why it is missing."""

    name: str
    title: str
    figures: list[Path] = field(default_factory=list)
    description: Description | None = None
    seconds: float = 0.0
    cached: bool = False
    skipped: str | None = None
    error: str | None = None


@dataclass
class FiguresRun:
    """What `make_figures` made: the sections in report order, the report's path, the model and settings."""

    model: str
    fingerprint: str
    settings: dict[str, Any]
    sections: list[Section]
    report: Path | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> list[Section]:
        return [s for s in self.sections if s.error]
