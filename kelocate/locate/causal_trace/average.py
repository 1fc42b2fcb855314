"""Dataset-level causal tracing: the average indirect effect (AIE) per token group and layer, as in ROME.

For every fact the trace's indirect effect (restored - corrupted probability) is averaged within six token
groups: first / middle / last subject token, first subsequent token, further tokens, last token. Groups are
then averaged over facts with a Student-t confidence interval. A fact whose answer is given is traced only
when the model predicts its first token (`require_known`), as ROME did with its known facts. Because an
average can hide a site that matters strongly for a few facts, the result also names, per kind and group,
the facts with the clearest effect there (largest peak over layers) and where it peaks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
from scipy import stats

from kelocate.errors import KelocateError, SubjectNotFoundError
from kelocate.locate.causal_trace.tracing import TraceSettings, trace

GROUPS = (
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first subsequent token",
    "further tokens",
    "last token",
)
FORMAT = "kelocate-trace-average"
N_CLEAREST = 5
# the trace settings a result's "config" records, in this order (window only when it is given)
RECORDED = ("samples", "noise", "window", "replace", "seed", "engine", "min_drop")


class Traceable(Protocol):
    """What averaging reads of a fact (`kelocate.data.facts.Fact` is one; `locate/` reads no files): a
    prompt to trace, its subject, (optionally) the answer the model should know, and where it came from."""

    @property
    def prompt(self) -> str: ...

    @property
    def subject(self) -> str | None: ...

    @property
    def answer(self) -> str | None: ...

    @property
    def source(self) -> str: ...


def token_groups(span: tuple[int, int], n_tokens: int) -> dict[str, list[int]]:
    """Token rows of each group; a group can be empty (e.g. no middle tokens for a two-token subject)."""
    start, end = span
    last = n_tokens - 1
    return {
        "first subject token": [start],
        "middle subject tokens": list(range(start + 1, end - 1)),
        "last subject token": [end - 1],
        "first subsequent token": [end] if end < last else [],
        "further tokens": list(range(end + 1, last)),
        "last token": [last],
    }


# ---------------------------------------------------------------------- averaging
def _clearest(peaks: list[dict[str, Any]], n: int = N_CLEAREST) -> list[dict[str, Any]]:
    """The `n` facts with the largest peak effect, largest first (ties keep the facts' order)."""
    return sorted(peaks, key=lambda row: -row["effect"])[:n]


def _summary(rows: list[np.ndarray], confidence: float) -> dict[str, Any]:
    """Mean and t-interval per layer of a list of [layers] arrays (None where undefined)."""
    if not rows:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    data = np.stack(rows)
    mean = data.mean(axis=0)
    if len(rows) > 1:
        sem = data.std(axis=0, ddof=1) / np.sqrt(len(rows))
        half = stats.t.ppf(0.5 + confidence / 2, len(rows) - 1) * sem
    else:
        half = np.full_like(mean, np.nan)

    def clean(a: np.ndarray) -> list[float | None]:
        return [None if not np.isfinite(v) else float(v) for v in a]

    return {"mean": clean(mean), "ci_low": clean(mean - half), "ci_high": clean(mean + half), "n": len(rows)}


def _config(settings: TraceSettings) -> dict[str, Any]:
    """The settings the result records (its "config"): the `RECORDED` ones that have a plain value."""
    values = {name: getattr(settings, name) for name in RECORDED}
    return {k: v for k, v in values.items() if isinstance(v, int | float | str | bool)}


def average_indirect_effect(
    model,
    facts: Sequence[Traceable],
    source: str = "facts",
    confidence: float = 0.95,
    require_known: bool = True,
    include_invalid: bool = False,
    on_step: Callable[[int, Traceable], None] | None = None,
    skipped_on_load: Sequence[dict[str, str]] = (),
    settings: TraceSettings | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Trace every fact and average indirect effects per token group and layer (JSON-ready dict).

    settings: how every fact is traced (a `TraceSettings`: kinds, samples, noise, ...; default its
    defaults); options: single settings by name, overriding `settings`, as `trace` takes them
    (`average_indirect_effect(model, facts, kinds="hidden", samples=2)`); checked before any tracing.
    Facts whose subject is not in the prompt, whose answer the model does not predict (with
    `require_known`), or whose trace locates nothing (unless `include_invalid`: see `TraceResult.problems`)
    are skipped; every skipped record is listed with its source and reason, and counted per reason
    (`skipped_on_load`: what a loader dropped).
    """
    settings = replace(settings or TraceSettings(), **options)
    per: dict[str, dict[str, list[np.ndarray]]] = {}
    peaks: dict[str, dict[str, list[dict[str, Any]]]] = {}
    records = [dict(r, category="subject_not_in_prompt") for r in skipped_on_load]
    clean, corrupted = [], []
    window = None

    def skip(fact: Traceable, category: str, reason: str) -> None:
        records.append({"source": fact.source, "category": category, "reason": reason})

    for i, fact in enumerate(facts):
        if on_step:
            on_step(i, fact)
        try:
            model.subject_span(fact.prompt, fact.subject)  # empty, absent or token-less subjects
        except SubjectNotFoundError as exc:
            skip(fact, "subject_not_in_prompt", str(exc))
            continue
        if fact.answer is not None and require_known:
            top = int(model.logits(model.encode(fact.prompt).ids)[0, -1].argmax())
            if top != model.answer_ids(fact.prompt, fact.answer)[0]:
                skip(fact, "not_known", f"the model's top token is {model.decode([top])!r}, not {fact.answer!r}")
                continue
        result = trace(model, fact.prompt, fact.subject, fact.answer, settings=settings)
        if not result.valid and not include_invalid:
            skip(fact, "invalid", "; ".join(result.problems))
            continue
        window = result.config["window"]
        clean.append(result.clean_score)
        corrupted.append(result.corrupted_score)
        groups = token_groups(result.subject_span, len(result.tokens))
        for kind in result.kinds:
            effect = result.indirect_effect(kind)
            for group, rows in groups.items():
                if rows:
                    curve = effect[rows].mean(axis=0)
                    per.setdefault(kind, {g: [] for g in GROUPS})[group].append(curve)
                    layer = int(np.argmax(curve))
                    peaks.setdefault(kind, {g: [] for g in GROUPS})[group].append(
                        {
                            "prompt": fact.prompt,
                            "subject": fact.subject,
                            "answer": result.answer,
                            "tokens": [result.tokens[i] for i in rows],
                            "layer": layer,
                            "effect": float(curve[layer]),
                        }
                    )
    categories = ("subject_not_in_prompt", "not_known", "invalid")
    skipped = {c: sum(r["category"] == c for r in records) for c in categories}
    traced = len(clean)
    if not traced:
        raise KelocateError(
            f"none of the {len(facts)} facts could be traced (skipped: {skipped}); check that the model knows "
            "them and that their subject occurs in the prompt, or include traces that locate nothing "
            "(--include-invalid)"
        )
    all_kinds = list(per)
    return {
        "format": FORMAT,
        "model": model.name,
        "source": source,
        "n_facts": traced,
        "skipped": skipped,
        "skipped_records": records,
        "include_invalid": include_invalid,
        "kinds": all_kinds,
        "groups": list(GROUPS),
        "window": window,
        "n_layers": model.n_layers,
        "confidence": confidence,
        "mean_clean": float(np.mean(clean)),
        "mean_corrupted": float(np.mean(corrupted)),
        "config": _config(settings),
        "effects": {k: {g: _summary(per[k][g], confidence) for g in GROUPS} for k in all_kinds},
        "clearest": {k: {g: _clearest(peaks[k][g]) for g in GROUPS} for k in all_kinds},
    }


def peak_layers(average: dict[str, Any]) -> dict[str, dict[str, tuple[int, float] | None]]:
    """Per token group and kind of an `average_indirect_effect` result: the layer of the largest mean effect and
    that effect (None where the group has no mean)."""
    out: dict[str, dict[str, tuple[int, float] | None]] = {}
    for group in average["groups"]:
        out[group] = {}
        for kind in average["kinds"]:
            mean = average["effects"][kind][group]["mean"]
            if mean is None:
                out[group][kind] = None
                continue
            values = np.array([np.nan if v is None else v for v in mean], dtype=float)
            j = int(np.nanargmax(values))
            out[group][kind] = (j, float(values[j]))
    return out
