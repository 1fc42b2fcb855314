"""Does locating predict editing? (after Hase et al. 2023, "Does Localization Inform Editing?")

kelocate's premise is that the located layers feed the editors (`layers="auto"`). `run_locate_vs_edit` tests it on
N known facts of the organism's world, or of a fact file on any model:

- locate: the single-layer MLP indirect effect of every layer at the token ROME writes (the profile's `token`:
  'last' on the organism, 'last_subject' elsewhere): p(answer) with that one layer's MLP output restored in the
  subject-corrupted run, minus the corrupted p(answer) (causal tracing, window 1);
- edit: ROME applied at each layer in turn, reverted exactly after each, scored teacher-forced: edit success (the
  share of the new target's tokens that are the argmax after the prompt), paraphrase success (the same, averaged
  over the fact's other statement templates) and p(new target) after the prompt.

Then `correlations`: Pearson and Spearman r of effect vs each success measure over all (fact, layer) pairs, and the
mean within-fact r (facts whose effect or success is constant over the layers have no r and are counted apart);
and auto vs fixed: the mean success when editing the layer with the largest effect (what `--layers auto` picks)
against the mean success at the profile's fixed layer. `LocateVsEditResult` is the whole result, JSON both ways.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from kelocate.atomic import write_text
from kelocate.edit import registry
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError
from kelocate.locate.causal_trace import trace
from kelocate.model import weights
from kelocate.model.scoring import score_targets
from kelocate.organism.datasets import exactly_n_cases
from kelocate.organism.world import World
from kelocate.studies.known_facts import known_cases

FORMAT = "kelocate-locate-vs-edit"
VERSION = 1
METRICS = ("success", "paraphrase", "target_prob")
Log = Callable[[str], None]


@dataclass(frozen=True)
class LocateVsEditSettings:
    """What to run: N facts (seeded), noise draws per traced cell (`samples`), and ROME's hyper-parameter
    overrides (e.g. `{"mom2_n_samples": 1000}` for a quick run)."""

    facts: int = 20
    samples: int = 10
    seed: int = 0
    method: str = "rome"
    overrides: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """One line of error for settings the study cannot run."""
        if self.facts < 1:
            raise KelocateError(f"need at least 1 fact, got --facts {self.facts}")
        if self.samples < 1:
            raise KelocateError(f"need at least 1 noise sample, got --samples {self.samples}")
        registry.method(self.method)  # an unknown method is its own one-line error


@dataclass
class FactRow:
    """One fact: its request, the traced answer and validity, and per layer the effect and the edit's scores
    (`success`, `paraphrase`, `target_prob`; NaN where the edit at that layer failed, with `errors`)."""

    prompt: str
    subject: str
    answer: str
    target: str
    token: str  # the traced and edited token, as the tokenizer spells it
    valid: bool
    effect: list[float]
    success: list[float]
    paraphrase: list[float]
    target_prob: list[float]
    errors: dict[str, str] = field(default_factory=dict)  # layer -> error of a failed edit

    @property
    def auto_layer(self) -> int:
        """The layer with the largest effect (the lowest on a tie), as `auto_layers(n_layers=1)` picks it."""
        effect = np.nan_to_num(np.asarray(self.effect, dtype=float), nan=-np.inf)
        return int(np.lexsort((np.arange(effect.size), -effect))[0])


@dataclass
class LocateVsEditResult:
    """The whole study: model, settings, the profile's fixed layer and edit token, every fact's rows, and the
    summary (`summarise`: correlations per metric, auto vs fixed, per-layer means)."""

    model: str
    fingerprint: str
    settings: dict[str, Any]
    fixed_layer: int
    token: str
    n_layers: int
    facts: list[FactRow]
    summary: dict[str, Any] = field(default_factory=dict)
    restored: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The result as JSON data (NaN kept as NaN: `json.dumps(allow_nan=True)`)."""
        data = asdict(self)
        for row, fact in zip(data["facts"], self.facts, strict=True):
            row["auto_layer"] = fact.auto_layer
        return {"format": FORMAT, "version": VERSION} | data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LocateVsEditResult:
        """Read `to_json()` data back; anything else is one line of error."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KelocateError(f'not a locate-vs-edit result (missing "format": "{FORMAT}")')
        fields = {k: v for k, v in data.items() if k not in ("format", "version")}
        fields["facts"] = [FactRow(**{k: v for k, v in r.items() if k != "auto_layer"}) for r in fields["facts"]]
        return cls(**fields)

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON, atomically."""
        return write_text(path, json.dumps(self.to_json(), indent=1, allow_nan=True) + "\n")


# ---------------------------------------------------------------------- the statistics
def _finite_pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape:
        raise KelocateError(f"cannot correlate {a.size} effects with {b.size} scores; pass one score per effect")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman r (with p-values) of finite pairs; NaN when fewer than 3 pairs or either side is
    constant (no correlation is defined)."""
    a, b = _finite_pairs(x, y)
    nan = {"pearson": math.nan, "pearson_p": math.nan, "spearman": math.nan, "spearman_p": math.nan, "n": int(a.size)}
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return nan
    pr, sr = stats.pearsonr(a, b), stats.spearmanr(a, b)
    return {"pearson": float(pr.statistic), "pearson_p": float(pr.pvalue), "spearman": float(sr.statistic),
            "spearman_p": float(sr.pvalue), "n": int(a.size)}


def correlations(effects: Sequence[Sequence[float]], scores: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Effect vs score over all (fact, layer) pairs (`pooled`) and within each fact (`within_pearson`,
    `within_spearman`: the mean r over the facts that have one; `within_facts`: how many do, `constant_facts`:
    how many have a constant side and no r)."""
    if len(effects) != len(scores):
        raise KelocateError(f"got {len(effects)} facts of effects and {len(scores)} of scores; pass one row each")
    pooled = correlation([v for row in effects for v in row], [v for row in scores for v in row])
    within = [correlation(e, s) for e, s in zip(effects, scores, strict=True)]
    defined = [w for w in within if not math.isnan(w["pearson"])]

    def mean(key: str) -> float:
        return float(np.mean([w[key] for w in defined])) if defined else math.nan

    return {"pooled": pooled, "within_pearson": mean("pearson"), "within_spearman": mean("spearman"),
            "within_facts": len(defined), "constant_facts": len(within) - len(defined)}


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else math.nan


def summarise(facts: Sequence[FactRow], fixed_layer: int, n_layers: int) -> dict[str, Any]:
    """Per metric: the correlations with the effect, and auto vs fixed (mean score at each fact's largest-effect
    layer, at the fixed layer, their difference, and how often auto wins / ties / loses); per layer: the mean
    effect and scores; and how often the largest effect falls on each layer."""
    if not facts:
        raise KelocateError("no facts to summarise; run the study on at least 1 fact")
    out: dict[str, Any] = {"facts": len(facts), "valid_traces": sum(f.valid for f in facts), "metrics": {}}
    effects = [f.effect for f in facts]
    for metric in METRICS:
        scores = [getattr(f, metric) for f in facts]
        auto = [s[f.auto_layer] for f, s in zip(facts, scores, strict=True)]
        fixed = [s[fixed_layer] for s in scores]
        pairs = [(a, b) for a, b in zip(auto, fixed, strict=True) if math.isfinite(a) and math.isfinite(b)]
        out["metrics"][metric] = {
            **correlations(effects, scores),
            "auto_mean": _nanmean(auto), "fixed_mean": _nanmean(fixed),
            "auto_minus_fixed": _nanmean([a - b for a, b in pairs]),
            "auto_wins": sum(a > b for a, b in pairs), "ties": sum(a == b for a, b in pairs),
            "fixed_wins": sum(a < b for a, b in pairs),
            "best_mean": _nanmean([np.nanmax(s) if np.isfinite(s).any() else math.nan for s in np.asarray(scores)]),
        }
    out["per_layer"] = {"effect": [_nanmean([f.effect[i] for f in facts]) for i in range(n_layers)]}
    for metric in METRICS:
        out["per_layer"][metric] = [_nanmean([getattr(f, metric)[i] for f in facts]) for i in range(n_layers)]
    out["auto_layer_counts"] = [sum(f.auto_layer == i for f in facts) for i in range(n_layers)]
    out["auto_is_fixed"] = sum(f.auto_layer == fixed_layer for f in facts)
    return out


# ---------------------------------------------------------------------- the measurement
def _accuracy(model, prompts: Sequence[str], target: str) -> float:
    """Mean share of the target's tokens that are the argmax after each prompt (teacher-forced)."""
    if not prompts:
        return math.nan
    scores = score_targets(model, list(prompts), [target] * len(prompts))
    return float(np.mean([np.mean(s.hits) if s.hits else 0.0 for s in scores]))


def measure_fact(model, request: EditRequest, paraphrases: Sequence[str], editor, token: str | int,
                 samples: int, log: Log = lambda text: None) -> FactRow:
    """One fact: its effect row at `token` and ROME's scores at every layer; the model is reverted after each
    edit (an edit that fails leaves NaN at its layer and its error in `errors`)."""
    result = trace(model, request.prompt, request.subject, answer=request.ground_truth, kinds="mlp", window=1,
                   samples=samples, tokens=[token])
    row = result.token_index(token)
    effect = [float(v) for v in result.indirect_effect("mlp")[row]]
    fact = FactRow(request.prompt, request.subject, result.answer, request.target_new, result.tokens[row],
                   result.valid, effect, [], [], [])
    for layer in range(model.n_layers):
        try:
            record = editor.apply(model, request, layers=[layer])
        except KelocateError as exc:
            fact.errors[str(layer)] = str(exc)
            for scores in (fact.success, fact.paraphrase, fact.target_prob):
                scores.append(math.nan)
            continue
        try:
            fact.success.append(_accuracy(model, [request.prompt], request.target_new))
            fact.paraphrase.append(_accuracy(model, paraphrases, request.target_new))
            fact.target_prob.append(score_targets(model, [request.prompt], [request.target_new])[0].prob)
        finally:
            record.revert()
    log(f"{request.prompt!r} -> {request.target_new!r}: effect {np.round(effect, 3).tolist()}, success "
        f"{np.round(fact.success, 2).tolist()}, paraphrase {np.round(fact.paraphrase, 2).tolist()}")
    return fact


def run_locate_vs_edit(model, settings: LocateVsEditSettings | None = None, world: World | None = None,
                       log: Log = lambda text: None, facts_file: str | Path | None = None) -> LocateVsEditResult:
    """The study on `model`: N known facts of `world` (default: the organism's) or of `facts_file` (a KnowEdit or
    CounterFact file, for any model), every layer; the model is left bit-identical to how it came (checked by
    `weights.state_hash`)."""
    settings = settings or LocateVsEditSettings()
    settings.check()
    start = time.perf_counter()
    if world is not None:
        cases = exactly_n_cases(model, world, settings.facts, seed=settings.seed)
    else:
        cases = known_cases(model, settings.facts, settings.seed, facts_file, "the locate-vs-edit study")
    editor = registry.editor(settings.method, **settings.overrides)
    hp = editor.hparams(model)
    token = hp.get("token", "last_subject")
    fixed = hp.get("layers") or []
    if len(fixed) != 1:
        raise KelocateError(f"{settings.method} edits {len(fixed)} layers in this profile; the study compares "
                            "single-layer edits (use rome)")
    initial = weights.state_hash(model)
    facts = []
    for i, case in enumerate(cases, 1):
        log(f"fact {i}/{len(cases)}")
        facts.append(measure_fact(model, case.request, case.paraphrases, editor, token, settings.samples, log))
    restored = weights.state_hash(model) == initial
    if not restored:
        raise KelocateError("the model was not restored after the edits; this is a bug in kelocate")
    return LocateVsEditResult(model.name, model.fingerprint, asdict(settings), int(fixed[0]), str(token),
                              model.n_layers, facts, summarise(facts, int(fixed[0]), model.n_layers),
                              restored=restored, seconds=round(time.perf_counter() - start, 3))
