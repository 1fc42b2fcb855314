"""The SMAP case (the comprehensive study's Figure 9): does causal tracing locate the fact, or the entity?

Three prompts of one subject are traced with the same settings, the subject corrupted in each:

- the fact ("SMAP was created in" -> Japan),
- a question that needs its chain ("The language of the country where SMAP was created is" -> Japanese),
- an unrelated fact of the same subject ("SMAP is a type of" -> group).

Per traced kind, the top-k layers at one token row are compared pairwise for every k = 1..n_layers: by
default the subject token whose best layer restores the answer most ('strongest_subject'; on a model that
spells "SMAP" letter by letter the last subject token carries almost nothing), in the single-layer grids (which
layer acts, not which window holds it). The paper says the locator finds "the area that is related to the
entity itself, not the whole fact": then the unrelated fact's layers overlap the fact's as much as the chain's
do. The rule (`kind_verdict`, stated in every result) reads means over k = 1..K, K the most layers any of the
three rows locates (indirect effect at least `LOCATED_FRACTION` of its strongest; beyond K a ranking orders
noise, and at k = n_layers every pair shares all layers): fact~chain above fact~unrelated by more than
`ENTITY_MARGIN` -> "fact"; else fact~unrelated above chance by more than the margin -> "entity"; else
"neither": the traces share no more top layers than two random rankings would, and "as much as" would only
say that both are noise. The curves over every k are kept and drawn, KLoB's way.

Baseline: KLoB's Sim_all is the similarity of locations of unrelated facts of other subjects, which a
three-prompt case does not have; RSim here takes as Sim_all the chance similarity of two independent random
layer rankings (`probes.overlap.chance_similarity`), and the plain similarities are reported beside it.

Before tracing, `check_answers` says whether each answer is the model's top token (a trace of an answer the
model does not give measures where a belief it does not hold comes from); `run_case` records the check and
goes on, the CLI refuses unless --force. On the organism `default_case` is the SMAP triple from its world.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kelocate.errors import KelocateError
from kelocate.locate.causal_trace import TraceResult, TraceSettings, trace
from kelocate.locate.causal_trace.result import WINDOWS
from kelocate.locate.causal_trace.subject import infer_subject
from kelocate.probes.overlap import chance_similarity, check_mode, overlap_curve, rsim_curve

FORMAT = "kelocate-case"
VERSION = 1
SEPARATOR = "=>"
ROLES = ("fact", "chain", "unrelated")
PAIRS = (("fact", "chain"), ("fact", "unrelated"), ("chain", "unrelated"))
TOKENS = ("strongest_subject", "last_subject", "first_subject", "last")  # the rows whose layers can be ranked
DEFAULT_TOKEN = "strongest_subject"
ENTITY_MARGIN = 0.1  # fact~chain may exceed fact~unrelated by this much and still count as "as much"
LOCATED_FRACTION = 0.1  # a layer is located when its indirect effect is at least this share of its row's best
PAPER_CLAIM = "locate the area that is related to the entity itself, not the whole fact"
BASELINE = ("chance: the expected similarity of the top-k sets of two independent random rankings of the layers "
            "(KLoB's Sim_all, the similarity of unrelated facts' locations, needs facts of other subjects, "
            "which a three-prompt case does not have)")


def rule_text(margin: float = ENTITY_MARGIN) -> str:
    """The verdict rule, as every result states it."""
    return (f"per kind, with means over k = 1..K, K = the most layers any of the three rows locates (indirect "
            f"effect >= {LOCATED_FRACTION:g} x its strongest; 1 <= K <= n_layers-1): fact~chain > fact~unrelated + "
            f"{margin:g} -> the locator finds the fact; else fact~unrelated > chance + {margin:g} -> it finds the "
            "entity (the unrelated fact overlaps the fact as much as the chain does); else neither (no layers "
            "shared beyond chance)")


def pair_name(a: str, b: str) -> str:
    return f"{a}~{b}"


# ====================================================================== the three prompts


@dataclass(frozen=True)
class CasePrompt:
    """One prompt of the case and the answer it should be completed with."""

    prompt: str
    answer: str

    @classmethod
    def parse(cls, text: str, option: str = "--fact") -> CasePrompt:
        """'PROMPT=>ANSWER' (split at the last '=>') -> CasePrompt; a mistake is one line naming `option`."""
        prompt, sep, answer = str(text).rpartition(SEPARATOR)
        if not sep or not prompt.strip() or not answer.strip():
            raise KelocateError(f"{option} {text!r} is not PROMPT{SEPARATOR}ANSWER; write e.g. "
                                f"{option} 'SMAP was created in{SEPARATOR}Japan'")
        return cls(" ".join(prompt.split()), answer.strip())

    @classmethod
    def of(cls, value: CasePrompt | str | Sequence[str], option: str) -> CasePrompt:
        """A CasePrompt from itself, a 'PROMPT=>ANSWER' string or a (prompt, answer) pair."""
        if isinstance(value, CasePrompt):
            return value
        if isinstance(value, str):
            return cls.parse(value, option)
        items = list(value)
        if len(items) != 2 or not all(isinstance(v, str) and v.strip() for v in items):
            raise KelocateError(f"{option} must be 'PROMPT{SEPARATOR}ANSWER' or a (prompt, answer) pair of "
                                f"non-empty strings, got {value!r}")
        return cls(" ".join(items[0].split()), items[1].strip())


@dataclass(frozen=True)
class Case:
    """The fact, the chain question that needs it and an unrelated fact of the same subject (None: inferred)."""

    fact: CasePrompt
    chain: CasePrompt
    unrelated: CasePrompt
    subject: str | None = None
    source: str = "given"  # where the triple came from

    def prompts(self) -> dict[str, CasePrompt]:
        return {"fact": self.fact, "chain": self.chain, "unrelated": self.unrelated}


def make_case(fact: CasePrompt | str | Sequence[str], chain: CasePrompt | str | Sequence[str],
              unrelated: CasePrompt | str | Sequence[str], subject: str | None = None) -> Case:
    """A Case from 'PROMPT=>ANSWER' strings, (prompt, answer) pairs or CasePrompts; subject None: inferred."""
    if subject is not None and not subject.strip():
        raise KelocateError("--subject is empty; pass the words to corrupt, e.g. --subject SMAP, or leave it out")
    return Case(CasePrompt.of(fact, "--fact"), CasePrompt.of(chain, "--chain"),
                CasePrompt.of(unrelated, "--unrelated"), subject.strip() if subject else None)


def default_case(model) -> Case:
    """The organism's SMAP triple, read from the world beside its checkpoint (the fact, the created_in ->
    language chain prompt of the same subject, and the subject's type); other models must be given one."""
    from kelocate.organism import world_file
    from kelocate.organism.world import load_world

    path = world_file(getattr(model, "path", None)) if model.provenance.is_organism else None
    if path is None:
        raise KelocateError(f"{model.name} has no default case (the SMAP triple is the organism's); pass --fact, "
                            "--chain and --unrelated as 'PROMPT=>ANSWER'")
    world = load_world(path)
    fact, hop, unrelated = world.case_study()
    chain = next((c for c in world.chains if c.first == fact.relation and c.second == hop.relation), None)
    if chain is None:
        raise KelocateError(f"the organism's world has no {fact.relation} -> {hop.relation} chain; rebuild it "
                            "with `kelocate organism build` or pass --chain")
    return Case(CasePrompt(fact.prompt, fact.answer), CasePrompt(chain.template.format(s=fact.subject), hop.answer),
                CasePrompt(unrelated.prompt, unrelated.answer), fact.subject, "the organism's SMAP case")


def _occurs(subject: str, prompt: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(subject) + r"(?!\w)", prompt) is not None


def resolve_subject(model, case: Case) -> tuple[str, str]:
    """The subject to corrupt in all three prompts and how it was found; one line if it misses a prompt."""
    if case.subject is not None:
        subject, how = case.subject, "given"
    else:
        guess = infer_subject(model, case.fact.prompt)
        subject, how = guess.subject, f"inferred from the fact ({guess.method})"
    for role, cp in case.prompts().items():
        if not _occurs(subject, cp.prompt):
            raise KelocateError(f"the subject {subject!r} ({how}) is not in the {role} prompt {cp.prompt!r}; "
                                "all three prompts must name one subject (pass it with --subject)")
    return subject, how


# ====================================================================== is each answer the model's?


@dataclass(frozen=True)
class AnswerCheck:
    """Whether the model's top next token after `prompt` is the first token of `answer`."""

    role: str
    prompt: str
    answer: str
    answer_token: str  # the answer's first token, as traced
    top_token: str
    p_answer: float
    p_top: float
    rank: int  # 1 = the top token

    @property
    def ok(self) -> bool:
        return self.rank == 1

    def line(self) -> str:
        if self.ok:
            return f"{self.role}: {self.answer!r} is the top token (p = {self.p_answer:.3f})"
        return (f"{self.role}: {self.prompt!r} -> the model says {self.top_token!r} (p = {self.p_top:.3f}), "
                f"not {self.answer!r} (rank {self.rank}, p = {self.p_answer:.3f})")

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "prompt": self.prompt, "answer": self.answer, "answer_token": self.answer_token,
                "top_token": self.top_token, "p_answer": self.p_answer, "p_top": self.p_top, "rank": self.rank,
                "ok": self.ok}


def check_answers(model, case: Case) -> list[AnswerCheck]:
    """For each prompt of the case: is its answer's first token the model's top next token?"""
    out = []
    for role, cp in case.prompts().items():
        probs = model.next_token_probs(cp.prompt)
        answer_id = int(model.answer_ids(cp.prompt, cp.answer)[0])
        top = int(probs.argmax())
        p = float(probs[answer_id])
        out.append(AnswerCheck(role, cp.prompt, cp.answer, model.decode([answer_id]), model.decode([top]), p,
                               float(probs[top]), int((probs > probs[answer_id]).sum()) + 1))
    return out


def unknown_line(checks: Sequence[AnswerCheck]) -> str | None:
    """One line naming the answers that are not the model's top token (None when all are)."""
    bad = [c.line() for c in checks if not c.ok]
    return "; ".join(bad) if bad else None


# ====================================================================== comparing the three traces


@dataclass
class CaseComparison:
    """Per kind: the compared layer rankings, pairwise top-k similarities over k, chance, RSim and the verdict."""

    kinds: list[str]
    token: str | int
    window: str
    similarity: str
    margin: float
    n_layers: int
    ks: list[int]
    rows: dict[str, dict[str, int]]  # kind -> role -> the token row ranked
    rankings: dict[str, dict[str, list[int]]]  # kind -> role -> all layers, best first
    overlap: dict[str, dict[str, list[float]]]  # kind -> 'fact~chain' ... -> similarity per k
    chance: list[float]  # Sim_all per k
    depth: dict[str, int]  # kind -> K: the verdict reads k = 1..K
    chance_means: dict[str, float]  # kind -> the mean of `chance` over k = 1..K
    rsim: dict[str, dict[str, list[float]]]
    means: dict[str, dict[str, float]]  # kind -> pair -> mean similarity over k = 1..n_layers-1
    kind_verdicts: dict[str, str]  # kind -> 'entity' | 'fact'
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {"kinds": self.kinds, "token": self.token, "window": self.window, "similarity": self.similarity,
                "margin": self.margin, "n_layers": self.n_layers, "k": self.ks, "rows": self.rows,
                "rankings": self.rankings, "overlap": self.overlap, "chance": self.chance,
                "depth": self.depth, "chance_means": self.chance_means, "rsim": self.rsim, "means": self.means,
                "kind_verdicts": self.kind_verdicts, "verdict": self.verdict, "baseline": BASELINE,
                "rule": rule_text(self.margin),
                "paper": PAPER_CLAIM}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CaseComparison:
        return cls(list(d["kinds"]), d["token"], d["window"], d["similarity"], float(d["margin"]),
                   int(d["n_layers"]), [int(k) for k in d["k"]],
                   {k: {r: int(i) for r, i in v.items()} for k, v in d["rows"].items()}, d["rankings"], d["overlap"],
                   [float(v) for v in d["chance"]],
                   {k: int(v) for k, v in d["depth"].items()}, {k: float(v) for k, v in d["chance_means"].items()},
                   d["rsim"], d["means"],
                   dict(d["kind_verdicts"]), d["verdict"])


def ranked_row(result: TraceResult, kind: str, token: str | int, window: str) -> int:
    """The token row whose layers are ranked: 'strongest_subject' (the subject token whose best layer restores
    the answer most, in the grid that is ranked), or any token `TraceResult.token_index` knows."""
    if token != "strongest_subject":
        return result.token_index(token)
    lo, hi = result.subject_span
    grid = np.nan_to_num(result.window_grid(kind, window)[lo:hi], nan=-np.inf)
    return lo + int(np.argmax(grid.max(axis=1)))


def layer_scores(result: TraceResult, kind: str, token: str | int, window: str) -> np.ndarray:
    """The per-layer restored probabilities of `kind` at `token` (the row a ranking reads)."""
    return np.asarray(result.window_grid(kind, window)[ranked_row(result, kind, token, window)], dtype=float)


def located_count(effect: np.ndarray, fraction: float = LOCATED_FRACTION) -> int:
    """How many layers a row locates: indirect effect at least `fraction` of the row's strongest (0 if none
    is positive). Beyond that many, a top-k ranking orders noise."""
    e = np.nan_to_num(np.asarray(effect, dtype=float), nan=-np.inf)
    best = float(e.max(initial=-np.inf))
    return int((e >= fraction * best).sum()) if best > 0 else 0


VERDICT_WORDS = {"entity": "the entity (as the paper says)", "fact": "the fact (unlike the paper's claim)",
                 "neither": "neither (no layers shared beyond chance)"}


def kind_verdict(means: Mapping[str, float], chance: float, margin: float = ENTITY_MARGIN) -> str:
    """'fact' when fact~chain beats fact~unrelated by more than `margin`; else 'entity' when fact~unrelated is
    more than `margin` above chance; else 'neither' (the traces share no more top layers than chance)."""
    fc, fu = means[pair_name("fact", "chain")], means[pair_name("fact", "unrelated")]
    if fc - fu > margin:
        return "fact"
    return "entity" if fu - chance > margin else "neither"


def verdict_line(kinds: Sequence[str], means: Mapping[str, Mapping[str, float]], kind_verdicts: Mapping[str, str],
                 chance: Mapping[str, float], depth: Mapping[str, int], similarity: str,
                 invalid: Mapping[str, str] | None = None) -> str:
    """One line: what the locator finds (entity / fact / neither / mixed), with the numbers behind it."""
    fc, fu = pair_name("fact", "chain"), pair_name("fact", "unrelated")
    numbers = ", ".join(f"{k} (k <= {depth[k]}) {means[k][fu]:.2f} vs {means[k][fc]:.2f}, chance {chance[k]:.2f}"
                        for k in kinds)
    what = f"(mean {similarity} of top-k layers, fact~unrelated vs fact~chain: {numbers})"
    found = {v for v in kind_verdicts.values()}
    if found == {"entity"}:
        line = ("the locator finds the entity, not the fact, as the paper says: the unrelated fact's top layers "
                f"overlap the fact's as much as the chain's do, beyond chance {what}")
    elif found == {"fact"}:
        line = ("the locator follows the fact, unlike the paper's claim: the chain's top layers overlap the fact's "
                f"more than the unrelated fact's do {what}")
    elif found == {"neither"}:
        line = ("cannot tell: the three traces share no more top layers than chance, so the locator finds neither "
                f"the entity's nor the fact's layers consistently {what}")
    else:
        groups = [f"{', '.join(k for k in kinds if kind_verdicts[k] == v)} find(s) {VERDICT_WORDS[v]}"
                  for v in VERDICT_WORDS if v in found]
        line = f"mixed: {'; '.join(groups)} {what}"
    if invalid:
        line += "; caveat: " + "; ".join(f"the {role} trace locates nothing ({why})" for role, why in invalid.items())
    return line


def compare_traces(traces: Mapping[str, TraceResult], kinds: Sequence[str] | None = None,
                   token: str | int = DEFAULT_TOKEN, window: str = "single", similarity: str = "jaccard",
                   margin: float = ENTITY_MARGIN) -> CaseComparison:
    """Compare the top-k layers of the three traces ('fact', 'chain', 'unrelated') per kind, k = 1..n_layers."""
    missing = [r for r in ROLES if r not in traces]
    if missing:
        raise KelocateError(f"no {', '.join(missing)} trace to compare; a case needs fact, chain and unrelated")
    check_mode(similarity)
    if not 0.0 <= margin < 1.0:
        raise KelocateError(f"the verdict margin must be in [0, 1), got {margin}")
    if window not in WINDOWS:
        raise KelocateError(f"unknown window {window!r}; use single or windowed")
    if isinstance(token, str) and token not in TOKENS:
        raise KelocateError(f"unknown token {token!r}; use {', '.join(TOKENS)} or an index")
    n_layers = {traces[r].n_layers for r in ROLES}
    if len(n_layers) != 1:
        raise KelocateError("the three traces come from models of different depth; trace them on one model")
    n = n_layers.pop()
    kinds = list(kinds) if kinds is not None else [k for k in traces["fact"].base_kinds if not k.startswith("hidden_")]
    ks = list(range(1, n + 1))
    chance = [chance_similarity(n, k, similarity) for k in ks]
    rows: dict[str, dict[str, int]] = {}
    rankings, overlap, rsims, means, verdicts, depth, chance_means = {}, {}, {}, {}, {}, {}, {}
    for kind in kinds:
        rows[kind] = {r: ranked_row(traces[r], kind, token, window) for r in ROLES}
        scores = {r: np.asarray(traces[r].window_grid(kind, window)[rows[kind][r]], dtype=float) for r in ROLES}
        located = max(located_count(scores[r] - traces[r].corrupted_score) for r in ROLES)
        depth[kind] = min(max(1, located), max(1, n - 1))
        rankings[kind] = {r: sorted(range(n), key=lambda i, s=scores[r]: (-np.nan_to_num(s[i], nan=-np.inf), i))
                          for r in ROLES}
        overlap[kind] = {pair_name(a, b): overlap_curve(scores[a], scores[b], ks, similarity) for a, b in PAIRS}
        rsims[kind] = {p: rsim_curve(v, chance) for p, v in overlap[kind].items()}
        means[kind] = {p: float(np.mean(v[: depth[kind]])) for p, v in overlap[kind].items()}
        chance_means[kind] = float(np.mean(chance[: depth[kind]]))
        verdicts[kind] = kind_verdict(means[kind], chance_means[kind], margin)
    invalid = {r: traces[r].problems[0] for r in ROLES if traces[r].problems}
    line = verdict_line(kinds, means, verdicts, chance_means, depth, similarity, invalid)
    return CaseComparison(kinds, token, window, similarity, margin, n, ks, rows, rankings, overlap, chance,
                          depth, chance_means, rsims, means, verdicts, line)


# ====================================================================== the study


def _trace_from_dict(d: Mapping[str, Any]) -> TraceResult:
    """Rebuild a TraceResult from its `to_dict()` (the grids travel as nested lists)."""
    return TraceResult(d["prompt"], list(d["tokens"]), [int(i) for i in d["token_ids"]], d["subject"],
                       (int(d["subject_span"][0]), int(d["subject_span"][1])), d["answer"], int(d["answer_id"]),
                       float(d["clean_score"]), float(d["corrupted_score"]),
                       {k: np.asarray(v, dtype=float) for k, v in d["grids"].items()}, dict(d.get("config", {})),
                       list(d.get("notes", [])), list(d.get("problems", [])))


@dataclass
class CaseResult:
    """A traced case: the triple, the subject, the answer checks, the three traces and their comparison."""

    model: str
    case: Case
    subject: str
    subject_source: str
    checks: list[AnswerCheck]
    traces: dict[str, TraceResult]
    comparison: CaseComparison
    notes: list[str] = field(default_factory=list)

    @property
    def all_known(self) -> bool:
        """Whether every answer is the model's top token."""
        return all(c.ok for c in self.checks)

    @property
    def verdict(self) -> str:
        return self.comparison.verdict

    def summary(self) -> dict[str, Any]:
        """Everything but the grids, JSON-ready (what `--json` prints)."""
        return {
            "format": FORMAT, "version": VERSION, "model": self.model, "source": self.case.source,
            "prompts": {r: {"prompt": cp.prompt, "answer": cp.answer} for r, cp in self.case.prompts().items()},
            "subject": self.subject, "subject_source": self.subject_source,
            "checks": [c.to_dict() for c in self.checks], "all_known": self.all_known,
            "trace_settings": {k: v for k, v in self.traces["fact"].config.items()
                               if k not in ("answer_given", "subject_source")},
            "traces_valid": {r: t.valid for r, t in self.traces.items()},
            "clean_scores": {r: t.clean_score for r, t in self.traces.items()},
            "corrupted_scores": {r: t.corrupted_score for r, t in self.traces.items()},
            **self.comparison.to_dict(), "notes": self.notes,
        }

    def to_dict(self) -> dict[str, Any]:
        """The summary plus every trace with its grids: enough to redraw the figures without a model."""
        return self.summary() | {"traces": {r: t.to_dict() for r, t in self.traces.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CaseResult:
        if d.get("format") != FORMAT:
            raise KelocateError("not a kelocate case file (missing \"format\": \"kelocate-case\")")
        prompts = {r: CasePrompt(v["prompt"], v["answer"]) for r, v in d["prompts"].items()}
        case = Case(prompts["fact"], prompts["chain"], prompts["unrelated"], d["subject"], d.get("source", "given"))
        checks = [AnswerCheck(c["role"], c["prompt"], c["answer"], c["answer_token"], c["top_token"],
                              float(c["p_answer"]), float(c["p_top"]), int(c["rank"])) for c in d["checks"]]
        traces = {r: _trace_from_dict(t) for r, t in d["traces"].items()}
        return cls(d["model"], case, d["subject"], d["subject_source"], checks, traces,
                   CaseComparison.from_dict(d), list(d.get("notes", [])))

    @classmethod
    def load(cls, path: str | os.PathLike) -> CaseResult:
        """Read a case.json written by `save` (a folder holding one works too)."""
        p = Path(path)
        p = p / "case.json" if p.is_dir() else p
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KelocateError(f"cannot read the case {str(p)!r}: {exc}; pass the case.json of "
                                "`kelocate study case`") from exc

    def save(self, folder: str | os.PathLike, formats: Sequence[str] = ("png",)) -> list[Path]:
        """Write FOLDER/case.json and the figures (case_traces, case_overlap), all appearing together or none."""
        from kelocate.atomic import atomic_files, write_text
        from kelocate.plots.case import save_case_figures

        out = Path(folder)
        with atomic_files(out) as stage:
            staged = [write_text(stage / "case.json", json.dumps(self.to_dict(), indent=1)),
                      *save_case_figures(self, stage, formats)]
        return [out / p.relative_to(stage) for p in staged]


def run_case(model, case: Case | None = None, settings: TraceSettings | None = None, *,
             token: str | int = DEFAULT_TOKEN, window: str = "single", similarity: str = "jaccard",
             margin: float = ENTITY_MARGIN, progress: Callable[[str], None] | None = None,
             **options: Any) -> CaseResult:
    """Check, trace and compare a case (None: the organism's SMAP triple) on `model`.

    settings / options: how to trace, as for `kelocate.trace` (the same for all three prompts; options override
    settings). The answer check is returned in the result (`checks`, `all_known`), never enforced here: a
    prompt whose answer is not the model's top token is traced anyway and its trace says it locates nothing.
    progress(role) is called before each trace.
    """
    case = case or default_case(model)
    s = replace(settings or TraceSettings(), **options)
    check_mode(similarity)
    if window not in WINDOWS:
        raise KelocateError(f"unknown window {window!r}; use single or windowed")
    if window == "single" and not s.single_layer:
        s = replace(s, single_layer=True)  # the single-layer grids are what the rankings read
    subject, how = resolve_subject(model, case)
    checks = check_answers(model, case)
    traces = {}
    for role, cp in case.prompts().items():
        if progress is not None:
            progress(role)
        traces[role] = trace(model, cp.prompt, subject, cp.answer, settings=s)
    kinds = list(s.kinds)
    comparison = compare_traces(traces, kinds, token, window, similarity, margin)
    notes = [f"baseline (Sim_all of RSim): {BASELINE}", f"verdict rule: {rule_text(margin)}",
             f"layers ranked by the {window}-layer grids at the {token} token"]
    bad = unknown_line(checks)
    if bad:
        notes.append(f"not the model's answer: {bad}")
    return CaseResult(model.name, case, subject, how, checks, traces, comparison, notes)
