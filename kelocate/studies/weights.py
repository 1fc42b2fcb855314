"""What edits write into the weights, over many facts: the embedding-space projection of the comprehensive
study's Figure 7 and the sparsity of its Figure 6, per weight editor, on the same N facts.

Every method edits each fact alone (`locate_and_edit` with its profile's layers), is scored, measured and
reverted bit for bit before the next edit:

- success: the model's teacher-forced argmax gives every token of the new target after the prompt;
- projection (`probes.projection.project_edit`) for methods that write `down_proj` (all but AdaLoRA);
- sparsity (`probes.sparsity.sparsity`): the concentration measures per edited matrix, |dW| per layer.

Summaries: the Figure 7 bars over the facts where every compared method succeeded (the paper: ZsRE cases where
MEND, ROME, MEMIT and FT-L all succeed), and over each method's own successes; the Figure 6 heatmaps of |dW| of
the headline matrix of each method on one fact they all edited successfully (the first such fact); the
concentration bars over every edit. `paper_checks` sets the paper's Figure 7 statements beside the measurement,
with the rule stated. `WeightsResult` is the whole result (JSON both ways; the heatmaps travel in an .npz).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kelocate.atomic import write_text, write_with
from kelocate.edit import registry
from kelocate.errors import KelocateError
from kelocate.locate_then_edit import locate_and_edit
from kelocate.model import weights
from kelocate.probes import projection, sparsity
from kelocate.studies.known_facts import known_cases
from kelocate.studies.numbers import fmt, pct
from kelocate.studies.recovery_probes import recall_vector

FORMAT = "kelocate-weights"
VERSION = 1
DEFAULT_METHODS = ("kn", "rome", "memit", "pmet", "alphaedit", "ft-l", "ft-m", "mend", "adalora")
COMPARED = ("mend", "rome", "memit", "ft-l")  # the methods of the paper's Figure 6 and 7
RISE = 0.05  # a Hit@k "rises" when it gains at least this much (a half of MEMIT's 10.5-point gain in the paper)
# the paper's Figure 7 statements (ZsRE, LLaMA-2 7B), read by `paper_checks`
PAPER = {
    "memit": "Hit@50 59.7% -> 70.2% (rises)",
    "mend": "Hit@50 above 90% before the edit, Hit@1 above 90% after",
    "rome": "no increase",
    "ft-l": "no increase",
}
Log = Callable[[str], None]


@dataclass(frozen=True)
class WeightsSettings:
    """What to run: the weight editors, the ones compared in the Figure 7 bars (`compared`: successes common
    to these), N facts and their seed, the projection's columns, and per method the editor's settings
    (hyper-parameter overrides; `trained`, the checkpoint folder of MEND)."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    compared: tuple[str, ...] = COMPARED
    facts: int = 20
    seed: int = 0
    columns: int = projection.N_COLUMNS
    editors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def check(self) -> None:
        """One line of error for settings the study cannot run."""
        if self.facts < 1:
            raise KelocateError(f"need at least 1 fact, got --facts {self.facts}")
        if self.columns < 1:
            raise KelocateError(f"need at least 1 projected column, got --columns {self.columns}")
        if not self.methods:
            raise KelocateError("no methods to run; pass --methods rome,memit,...")
        for name in self.methods:
            entry = registry.method(name)
            if entry.serves is not None or entry.needs_pool:
                raise KelocateError(f"{name} changes no weights (its edits are served); the weights study "
                                    "measures weight editors")
            if entry.needs_trained and registry.TRAINED not in self.editors.get(name, {}):
                raise KelocateError(f"{name} needs a trained checkpoint; pass --trained {name}=DIR")
        unknown = [m for m in self.compared if m not in self.methods]
        if unknown:
            raise KelocateError(f"--compared names {', '.join(unknown)}, which --methods does not run")


@dataclass
class EditRow:
    """One method's edit of one fact: success, the projection's headline numbers (None for an editor that
    writes no `down_proj`), the concentration per edited matrix, the mass per layer, or the error."""

    method: str
    fact: int
    success: bool = False
    projection: dict[str, Any] | None = None
    matrices: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


def projection_numbers(result: projection.EditProjection) -> dict[str, Any]:
    """The headline numbers of one projected edit: layer, column share and every Hit@k reading."""
    head = result.headline
    out: dict[str, Any] = {"layer": result.layer, "column_share": head.column_share, "ks": list(result.ks)}
    for which, whens, hows in (("top", ("before", "after", "delta"), ("any", "mean")),
                               ("random", ("before", "after"), ("any", "mean")),
                               ("base", ("before", "after"), ("rate", "any_of"))):
        out[which] = {w: {h: {str(k): result.hit(which, w, h, k) for k in result.ks} for h in hows} for w in whens}
    return out


def matrix_numbers(p: sparsity.ParameterSparsity) -> dict[str, Any]:
    """The concentration measures of one edited matrix (None shares for an unchanged one)."""
    return {"name": p.name, "layer": p.layer, "shape": p.shape, "frobenius": p.frobenius, "relative": p.relative,
            "top-5 share": p.columns.top5_share, "top-1% share": p.columns.top1pct_share,
            "participation ratio": p.columns.participation_ratio, "rank": p.rank.rank,
            "stable rank": p.rank.stable_rank}


def mean_projection(rows: Sequence[EditRow]) -> dict[str, Any] | None:
    """The mean of the rows' projection numbers, in `probes.projection.summarise`'s shape (None if none)."""
    rows = [r for r in rows if r.projection is not None]
    if not rows:
        return None
    first = rows[0].projection
    out: dict[str, Any] = {"n": len(rows), "methods": sorted({r.method for r in rows})}
    for which in ("top", "random", "base"):
        out[which] = {w: {h: {k: float(np.mean([r.projection[which][w][h][k] for r in rows])) for k in by_k}
                          for h, by_k in hows.items()} for w, hows in first[which].items()}
    return out


def concentration(rows: Sequence[EditRow]) -> dict[str, list[float]]:
    """The concentration measures pooled over the rows' edited matrices (unchanged matrices left out)."""
    out: dict[str, list[float]] = {m: [] for m in sparsity.MEASURES}
    for row in rows:
        for m in row.matrices:
            if m["participation ratio"] is not None:
                for measure in sparsity.MEASURES:
                    out[measure].append(float(m[measure]))
    return out


def paper_checks(summaries: Mapping[str, Mapping[str, Any] | None], rise: float = RISE) -> dict[str, str]:
    """Per method the paper names: its statement, what was measured (top dW columns, any of them) and whether
    it holds. The rule: Hit@k "rises" when after - before >= `rise`; "above 90%" is >= 0.9."""
    out = {}
    for method, claim in PAPER.items():
        s = summaries.get(method)
        if not s:
            continue
        top = s["top"]
        b50, a50 = top["before"]["any"].get("50"), top["after"]["any"].get("50")
        a1 = top["after"]["any"].get("1")
        if b50 is None or a50 is None:
            continue
        measured = f"Hit@50 {b50:.0%} -> {a50:.0%}" + (f", Hit@1 after {a1:.0%}" if a1 is not None else "")
        rises = a50 - b50 >= rise - 1e-9  # a gain of exactly `rise` counts, whatever the rounding
        if method == "memit":
            holds = rises
        elif method == "mend":
            holds = b50 >= 0.9 and a1 is not None and a1 >= 0.9
        else:
            holds = not rises
        verdict = "holds" if holds else "does not hold"
        out[method] = f"{registry.method(method).label}: paper: {claim}; measured: {measured} (n={s['n']}) -> {verdict}"
    return out


@dataclass
class WeightsResult:
    """The whole study: settings, the facts, every edit's row, the summaries and the heatmap fact."""

    model: str
    fingerprint: str
    settings: dict[str, Any]
    facts: list[dict[str, str]]
    rows: list[EditRow]
    heatmap_fact: int | None = None
    heatmap_names: dict[str, str] = field(default_factory=dict)  # method -> the matrix drawn
    summary: dict[str, Any] = field(default_factory=dict)
    restored: bool = False
    seconds: float = 0.0
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # method -> |dW|, saved apart

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "heatmaps"}
        data["rows"] = [asdict(r) for r in self.rows]
        return json.loads(json.dumps({"format": FORMAT, "version": VERSION} | data, allow_nan=True))

    @classmethod
    def from_json(cls, data: dict[str, Any], heatmaps: Mapping[str, np.ndarray] | None = None) -> WeightsResult:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KelocateError(f'not a weights result (missing "format": "{FORMAT}")')
        fields = {k: v for k, v in data.items() if k not in ("format", "version")}
        fields["rows"] = [EditRow(**r) for r in fields["rows"]]
        return cls(**fields, heatmaps=dict(heatmaps or {}))

    def save(self, path: str | Path) -> list[Path]:
        """Write PATH (JSON) and PATH with .npz (the heatmaps), each atomically."""
        path = Path(path)
        arrays = path.with_suffix(".npz")
        written = [save_heatmaps(arrays, self.heatmaps)]
        written.append(write_text(path, json.dumps(self.to_json(), indent=1, allow_nan=True) + "\n"))
        return written

    @classmethod
    def load(cls, path: str | Path) -> WeightsResult:
        path = Path(path)
        with np.load(path.with_suffix(".npz")) as stored:
            heatmaps = {k: stored[k] for k in stored.files}
        return cls.from_json(json.loads(path.read_text()), heatmaps)


def save_heatmaps(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write the |dW| heatmaps (method -> array, as float32) as a compressed .npz, atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})

    return write_with(path, write)


def edit_one(model, method: str, editor, request, index: int, columns: int, seed: int) -> tuple[EditRow, Any]:
    """Edit one fact with one method, score and measure it, revert it; returns the row and the record (reverted)."""
    row = EditRow(method, index)
    start = time.perf_counter()
    try:
        record = locate_and_edit(model, editor, [request])
    except KelocateError as exc:
        row.error = str(exc)
        row.seconds = round(time.perf_counter() - start, 3)
        return row, None
    try:
        row.success = bool(recall_vector(model, [(request.prompt, request.target_new)])[0])
    finally:
        record.revert()
    measured = sparsity.sparsity(record)
    row.matrices = [matrix_numbers(p) for p in measured.parameters]
    row.layers = [asdict(m) for m in measured.layers]
    if any(weights.layer_of(n) is not None and n == weights.mlp_out_name(weights.layer_of(n))
           and not torch.equal(record.before[n], record.after[n]) for n in record.names):
        row.projection = projection_numbers(projection.project_edit(model, record, n_columns=columns, seed=seed))
    row.seconds = round(time.perf_counter() - start, 3)
    return row, record


def summarise(rows: Sequence[EditRow], methods: Sequence[str], compared: Sequence[str], n_facts: int
              ) -> dict[str, Any]:
    """Per method: success rate, Figure 7 means over common successes and over own successes, the
    concentration values and their means; the paper checks; the common facts."""
    by = {m: [r for r in rows if r.method == m] for m in methods}
    common = [i for i in range(n_facts)
              if compared and all(any(r.fact == i and r.success for r in by[m]) for m in compared)]
    out: dict[str, Any] = {"common_facts": common, "compared": list(compared), "methods": {}}
    for m in methods:
        ok = [r for r in by[m] if r.success]
        values = concentration(by[m])
        out["methods"][m] = {
            "edits": len(by[m]), "errors": sum(r.error is not None for r in by[m]),
            "success": len(ok) / len(by[m]) if by[m] else math.nan,
            "projection_common": mean_projection([r for r in ok if r.fact in common]) if m in compared else None,
            "projection_own": mean_projection(ok),
            "concentration": values, "concentration_mean": sparsity.mean_measures(values),
            "seconds": float(np.mean([r.seconds for r in by[m]])) if by[m] else math.nan}
    out["paper"] = paper_checks({m: out["methods"][m]["projection_common"] for m in compared})
    pr = {m: out["methods"][m]["concentration_mean"]["participation ratio"] for m in ("ft-l", "rome")
          if m in out["methods"]}
    if len(pr) == 2 and None not in pr.values():
        denser = pr["ft-l"] > pr["rome"]
        out["ft_l_denser_than_rome"] = (f"FT-L's dW is {'denser' if denser else 'not denser'} than ROME's: mean "
                                        f"participation ratio {pr['ft-l']:.1f} vs {pr['rome']:.1f} columns")
    return out


SUMMARY_COLUMNS = ["method", "success", "Hit@10 top W->W'", "Hit@50 top W->W'", "Hit@50 random W->W'",
                   "top-5 share", "top-1% share", "part. ratio", "rank", "s/edit"]


def summary_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per method: success, Hit@k of the top dW columns and of random columns before -> after (any of them, over
    the common successes), the mean concentration measures and the seconds per edit; header and rows of text."""
    rows = []
    for method, m in summary["methods"].items():
        p, c = m["projection_common"], m["concentration_mean"]
        hits = [f"{pct(p[w]['before']['any'][k])} -> {pct(p[w]['after']['any'][k])}" if p else "-"
                for w, k in (("top", "10"), ("top", "50"), ("random", "50"))]
        rows.append([method, pct(m["success"]), *hits, fmt(c["top-5 share"]), fmt(c["top-1% share"]),
                     fmt(c["participation ratio"], ".1f"), fmt(c["rank"], ".1f"), fmt(m["seconds"], ".2f")])
    return list(SUMMARY_COLUMNS), rows


def run_weights(model, settings: WeightsSettings | None = None, facts_file: str | Path | None = None,
                log: Log = lambda text: None) -> WeightsResult:
    """The study on `model`: N known facts (its world, or `facts_file`), every method one fact at a time; the
    model is left bit-identical to how it came (checked by `weights.state_hash`)."""
    settings = settings or WeightsSettings()
    settings.check()
    start = time.perf_counter()
    cases = known_cases(model, settings.facts, settings.seed, facts_file, "the weights study")
    initial = weights.state_hash(model)
    editors = {m: registry.editor(m, **settings.editors.get(m, {})) for m in settings.methods}
    rows: list[EditRow] = []
    heat_fact, heatmaps, fallback = None, {}, None
    for i, case in enumerate(cases):
        done = {}
        for method, editor in editors.items():
            row, record = edit_one(model, method, editor, case.request, i, settings.columns, settings.seed)
            rows.append(row)
            done[method] = (row, record)
        if weights.state_hash(model) != initial:
            raise KelocateError(f"the model was not restored after fact {i}; this is a bug in kelocate")
        log(f"fact {i + 1}/{len(cases)} {case.request.prompt!r} -> {case.request.target_new!r}: "
            + ", ".join(f"{m} {'ok' if r.success else ('error' if r.error else 'no')}" for m, (r, _) in done.items()))
        # the heatmaps: the first fact every method edited successfully, else the first every compared one did
        every = all(r.success for r, _ in done.values())
        fallback_ok = all(done[m][0].success for m in settings.compared or settings.methods)
        if heat_fact is None and (every or (fallback is None and fallback_ok)):
            drawn = {m: sparsity.abs_delta(rec) for m, (_, rec) in done.items() if rec is not None}
            if every:
                heat_fact, heatmaps = i, drawn
            else:
                fallback = (i, drawn)
    if heat_fact is None and fallback is not None:
        heat_fact, heatmaps = fallback
    names = {m: name for m, (name, _) in heatmaps.items()}
    arrays = {m: a for m, (_, a) in heatmaps.items()}
    summary = summarise(rows, settings.methods, settings.compared, len(cases))
    facts = [{"prompt": c.request.prompt, "subject": c.request.subject, "object": c.request.ground_truth or "",
              "new_object": c.request.target_new} for c in cases]
    return WeightsResult(model.name, model.fingerprint, settings.to_json(), facts, rows, heat_fact, names, summary,
                         restored=weights.state_hash(model) == initial,
                         seconds=round(time.perf_counter() - start, 3), heatmaps=arrays)
