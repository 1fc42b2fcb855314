"""The sections of the figures report: per figure, how its data is computed, drawn and described.

A `Step` computes JSON data from the model (the expensive part, cached by `figures.run`), draws its figures
from that data alone, and describes them: a caption saying what the figure shows and how it was made, the
numbers behind it (small tables) and the paper's number where one exists. Steps that need something a model
lacks (the organism's world, KLoB files) say so in `unavailable` instead of failing the report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kelocate.errors import KelocateError

Table = tuple[list[str], list[list[str]]]  # header, rows


@dataclass
class FiguresSettings:
    """The size of each section: facts traced for the averaged trace, KLoB records, the KnowEdit study's cases
    per task, recovery facts and rounds, locate-vs-edit and weights facts; noise draws per traced cell; the
    facts file for a model without a world; trained checkpoints (method -> folder), and whether the organism
    trains MEND when none is given (without a checkpoint MEND is left out of the sections)."""

    trace_facts: int = 40
    samples: int = 10
    klob_limit: int = 20
    study_cases: int = 2
    recovery_facts: int = 20
    recovery_rounds: int = 5
    locate_facts: int = 50
    weights_facts: int = 20
    seed: int = 0
    facts_file: str | None = None
    klob_data: str | None = None
    trained: dict[str, str] = field(default_factory=dict)
    train_mend: bool = True  # on the organism, train MEND into OUT/data when no checkpoint is given
    weights_methods: tuple[str, ...] | None = None  # None: every weight editor (MEND with a checkpoint)
    recovery_methods: tuple[str, ...] | None = None  # None: ROME, MEMIT, FT-L, FT-M (and MEND with a checkpoint)

    def check(self) -> None:
        for name in ("trace_facts", "samples", "klob_limit", "study_cases", "recovery_facts", "recovery_rounds",
                     "locate_facts", "weights_facts"):
            if getattr(self, name) < 1:
                raise KelocateError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.klob_limit < 2:
            raise KelocateError(f"--klob-limit must be at least 2, got {self.klob_limit}")
        from kelocate.edit import registry

        for name in (*(self.weights_methods or ()), *(self.recovery_methods or ())):
            registry.method(name)  # an unknown method is one line of error
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


def file_id(path: str | None) -> dict[str, Any] | None:
    """What a cache key records of a file or folder: its resolved path, size and modification time (an edited
    file is a new key)."""
    if path is None:
        return None
    p = Path(path).resolve()
    stat = p.stat()
    return {"path": str(p), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def facts_file_id(ctx: Context) -> dict[str, Any] | None:
    """The facts file's identity where a section reads it (not on the organism, which has its world)."""
    return None if ctx.organism else file_id(ctx.settings.facts_file)


def editor_settings(ctx: Context) -> dict[str, dict[str, str]]:
    """The editors' settings of the trained checkpoints (method -> {"trained": folder})."""
    return {m: {"trained": d} for m, d in ctx.settings.trained.items()}


def trained_ids(ctx: Context) -> dict[str, Any]:
    """The trained checkpoints' identities (method -> the folder's marker file), for cache keys."""
    out = {}
    for method, folder in sorted(ctx.settings.trained.items()):
        marker = Path(folder) / f"{method.partition('@')[0]}.json"
        out[method] = file_id(str(marker)) if marker.is_file() else str(Path(folder).resolve())
    return out


def needs_facts(ctx: Context) -> str | None:
    if ctx.organism or ctx.settings.facts_file:
        return None
    return "needs facts the model knows: pass --facts-file (a KnowEdit or CounterFact file)"


def peak_rows(average: Mapping[str, Any]) -> list[list[str]]:
    """Per token group of an averaged trace, per kind: the peak layer of the mean effect and its value."""
    from kelocate.locate.causal_trace.average import peak_layers

    return [[group, *("-" if p is None else f"layer {p[0]} ({p[1]:+.3f})" for p in per.values())]
            for group, per in peak_layers(dict(average)).items()]


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
    exception: BaseException | None = field(default=None, repr=False)  # an unexpected error, raised after the report


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
