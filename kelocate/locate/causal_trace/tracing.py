"""Causal tracing (ROME, Meng et al. 2022): where does the model recall the fact a prompt asks for?

`trace(model, "SMAP was created in")` corrupts the subject's token embeddings with noise, then restores clean
activations one (token, layer) cell at a time and records how much of the answer's probability comes back.
See `problem.py` for the exact semantics, `engine.py` for the fast exact engine and `oracle.py` for the
plain reference loops. How to trace (kinds, samples, noise, window, ...) is one `TraceSettings`: build it
once and pass it (`trace(model, prompt, settings=s)`), or name single options (`trace(model, prompt,
samples=4)`), which override the settings given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch

from kelocate.errors import KelocateError
from kelocate.locate.causal_trace.noise import default_subjects, draw_noise, embedding_sigma, parse_noise
from kelocate.locate.causal_trace.problem import (
    KINDS,
    SEVERABLE,
    TraceProblem,
    default_window,
    single_key,
    token_row,
)
from kelocate.locate.causal_trace.result import TraceResult
from kelocate.locate.causal_trace.subject import infer_subject

ENGINES = ("fast", "oracle", "per_cell")
DEFAULT_MIN_DROP = 0.05  # least drop of p(answer) under corruption for a trace to locate anything
DEFAULT_SEED = 1
WINDOW_RULE = "clip(round(10 * n_layers / 28), 1, 10): ROME's 10 layers at GPT-J depth, scaled"


def parse_kinds(kinds: str | Sequence[str]) -> tuple[str, ...]:
    """'all' / 'hidden' / 'mlp,attn' / a sequence -> validated tuple of kinds."""
    items = kinds.split(",") if isinstance(kinds, str) else list(kinds)
    out: list[str] = []
    for item in (k.strip() for k in items):
        for k in KINDS if item == "all" else (item,):
            if k not in KINDS:
                raise KelocateError(f"unknown trace kind {k!r}; use hidden, mlp, attn or all")
            if k not in out:
                out.append(k)
    if not out:
        raise KelocateError("no trace kind given; use hidden, mlp, attn or all")
    return tuple(out)


def parse_severed(severed: str | Sequence[str] | None) -> tuple[str, ...]:
    """None / 'mlp' / 'attn' / 'mlp,attn' -> validated tuple of severed sites."""
    if not severed:
        return ()
    items = severed.split(",") if isinstance(severed, str) else list(severed)
    out = tuple(dict.fromkeys(s.strip() for s in items))
    for site in out:
        if site not in SEVERABLE:
            raise KelocateError(f"unknown severed site {site!r}; use mlp or attn")
    return out


def check_options(kinds: str | Sequence[str], severed: str | Sequence[str] | None, noise: str | float,
                  engine: str, samples: int, window: int | None):
    """Validate trace options before any work (the CLI calls this before loading a model).

    Returns (kinds, severed sites, parsed noise spec); raises KelocateError naming the bad option.
    """
    kinds_t, severed_t = parse_kinds(kinds), parse_severed(severed)
    spec = parse_noise(noise)
    if engine not in ENGINES:
        raise KelocateError(f"unknown engine {engine!r}; use {', '.join(ENGINES)}")
    if samples < 1:
        raise KelocateError(f"--samples must be at least 1, got {samples}")
    if window is not None and window < 1:
        raise KelocateError(f"--window must be at least 1 layer, got {window}")
    return kinds_t, severed_t, spec


def _run_engine(model, problem: TraceProblem, engine: str, notes: list[str], max_tokens: int):
    if engine == "fast":
        from kelocate.locate.causal_trace.engine import fast_grids
        from kelocate.model.stack import StackUnavailable, guarded_stack

        try:
            return fast_grids(guarded_stack(model), problem, max_tokens=max_tokens), "fast"
        except StackUnavailable as exc:
            notes.append(f"fast engine not used: {exc}; ran the hook-based oracle (same numbers, slower)")
            engine = "oracle"
    from kelocate.locate.causal_trace.oracle import oracle_grids, per_cell_grids

    grids = (
        oracle_grids(model, problem) if engine == "oracle" else per_cell_grids(model, problem)
    )
    return grids, engine


def resolve_answer(model, prompt: str, ids: torch.Tensor, answer: str | None, notes: list[str]) -> int:
    """The traced answer token: the clean run's top token, or the first token of `answer`."""
    if answer is None:
        return int(model.logits(ids)[0, -1].argmax())
    answer_ids = model.answer_ids(prompt, answer)
    if len(answer_ids) > 1:
        notes.append(
            f"the answer {answer!r} has {len(answer_ids)} tokens; tracing its first token "
            f"{model.decode(answer_ids[:1])!r}"
        )
    return int(answer_ids[0])


@dataclass(frozen=True)
class TraceSettings:
    """How to trace a prompt: everything but the model, the prompt, its subject and its answer.

    Validated when made (one line of error naming the bad option), so a command checks its options before it
    loads a model; `kinds` and `severed` are stored as tuples.

    kinds: hidden / mlp / attn / 'all'; samples: noise draws per cell; noise: '3sigma', 'Ksigma', a float
    scale, 'uniform[:SCALE]'; window: layers restored around each layer for mlp/attn (None: `default_window`,
    recorded in the config); replace: substitute noise instead of adding; seed: of the noise draws; severed:
    'mlp' and/or 'attn' adds hidden grids with that module frozen at later layers; engine: 'fast' (default),
    'oracle' or 'per_cell' (reference loops); sigma_subjects: subjects for sigma (default: the model's entity
    names, else a built-in list); max_tokens: the fast engine's batch budget; tokens: compute only these rows
    ('last_subject', 'first_subject', 'last' or indices; None: all) and leave the others NaN — a locator
    that reads one row (KLoB) needs no more; single_layer: also trace mlp/attn restoring one layer at a time
    ('mlp_single', 'attn_single'), which tells which layer acts where a window only tells which window
    holds it; min_drop: the least clean - corrupted drop of p(answer) for the trace to locate anything (see
    `validity_problems`).
    """

    kinds: str | Sequence[str] = KINDS
    samples: int = 10
    noise: str | float = "3sigma"
    window: int | None = None
    replace: bool = False
    seed: int = DEFAULT_SEED
    severed: str | Sequence[str] | None = None
    engine: str = "fast"
    sigma_subjects: Sequence[str] | None = None
    max_tokens: int = 16384
    tokens: Sequence[str | int] | None = None
    single_layer: bool = True
    min_drop: float = DEFAULT_MIN_DROP

    def __post_init__(self) -> None:
        kinds, severed, _ = check_options(self.kinds, self.severed, self.noise, self.engine, self.samples,
                                          self.window)
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "severed", severed)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names (what `trace(..., **options)` accepts)."""
        return tuple(f.name for f in fields(cls))


def trace(model, prompt: str, subject: str | None = None, answer: str | None = None,
          settings: TraceSettings | None = None, **options) -> TraceResult:
    """Trace `prompt` on a `HookedModel` and return the restored-probability grids.

    subject: the corrupted words (inferred when None, see `subject.py`); answer: traced token (default: the
    clean top token; a multi-token answer is traced by its first token); settings: how to trace (a
    `TraceSettings`, default its defaults); options: single settings by name, overriding `settings`
    (`trace(model, prompt, samples=4, kinds="mlp")`); an unknown name is a TypeError.
    """
    s = replace(settings or TraceSettings(), **options)
    kinds_t, severed_t, spec = s.kinds, s.severed, parse_noise(s.noise)
    samples, window, replace_noise, seed, tokens = s.samples, s.window, s.replace, s.seed, s.tokens
    if not prompt or not prompt.strip():
        raise KelocateError("the prompt is empty; pass the text to trace, e.g. 'SMAP was created in'")
    notes: list[str] = []
    subject_source = "given"
    if subject is None:
        guess = infer_subject(model, prompt)
        subject, subject_source = guess.subject, guess.method
        notes.append(f"subject inferred: {subject!r} ({guess.reason}); pass --subject to choose another")
    span = model.subject_span(prompt, subject)
    ids = model.encode(prompt).ids
    answer_id = resolve_answer(model, prompt, ids, answer, notes)

    sigma = None
    sigma_source = None
    scale = spec.value
    if spec.relative:
        sigma_source = "given" if s.sigma_subjects is not None else default_subjects(model)[1]
        sigma = embedding_sigma(model, s.sigma_subjects)
        scale = spec.value * sigma
    draws = draw_noise(samples, span[1] - span[0], model.d_model, spec.distribution, seed) * scale
    win = default_window(model.n_layers) if window is None else int(window)
    rows = None if tokens is None else tuple(token_row(t, span, len(ids)) for t in tokens)
    problem = TraceProblem(ids, span, answer_id, draws, replace_noise, kinds_t, severed_t, win, rows)
    grids, used = _run_engine(model, problem, s.engine, notes, s.max_tokens)
    windowed = tuple(k for k in kinds_t if k != "hidden")
    if s.single_layer and windowed and win > 1:
        single = TraceProblem(ids, span, answer_id, draws, replace_noise, windowed, (), 1, rows)
        for kind, grid in _run_engine(model, single, used, [], s.max_tokens)[0].grids.items():
            grids.grids[single_key(kind)] = grid
    top = int(model.logits(ids)[0, -1].argmax())
    problems = validity_problems(span, len(ids), grids.clean, grids.corrupted, s.min_drop,
                                 None if answer is None or top == answer_id else model.decode([top]), answer)

    tokens = model.tokens(prompt)
    config = {
        "kinds": list(kinds_t),
        "severed": list(severed_t),
        "samples": samples,
        "noise": spec.text,
        "noise_distribution": spec.distribution,
        "noise_scale": scale,
        "sigma": sigma,
        "sigma_subjects": sigma_source,
        "replace": replace_noise,
        "window": win,
        "window_rule": "given" if window is not None else WINDOW_RULE,
        "seed": seed,
        "engine": used,
        "model": model.name,
        "n_layers": model.n_layers,
        "dtype": str(model.dtype).removeprefix("torch."),
        "encoding": model.encoding,
        "model_fingerprint": model.fingerprint,
        "subject_source": subject_source,
        "answer_given": answer,
        "rows": None if rows is None else list(rows),
        "single_layer": bool(s.single_layer and windowed and win > 1) or (bool(windowed) and win == 1),
        "min_drop": s.min_drop,
    }
    return TraceResult(
        prompt,
        tokens,
        [int(i) for i in ids.tolist()],
        subject,
        span,
        model.decode([answer_id]),
        answer_id,
        grids.clean,
        grids.corrupted,
        grids.grids,
        config,
        notes,
        problems,
    )


def validity_problems(span: tuple[int, int], n_tokens: int, clean: float, corrupted: float, min_drop: float,
                      other_top: str | None = None, answer: str | None = None) -> list[str]:
    """Why a trace cannot locate anything (empty: it can).

    - The subject ends at the last token: restoring any state there gives the clean run back trivially.
    - Corrupting the subject does not lower p(answer) by `min_drop`: the answer does not depend on the
      subject here, so no layer carries it (the restored grid is noise around the corrupted score).
    - A given answer is not what the model predicts (`other_top` is its top token): the trace measures
      where a belief the model does not hold comes from.
    """
    problems = []
    if span[1] == n_tokens:
        problems.append("the subject ends at the last token, so restoring it gives the clean run back "
                        "trivially; use a prompt that continues after the subject")
    if clean - corrupted < min_drop:
        problems.append(f"corrupting the subject does not lower p(answer) by {min_drop:g} (clean {clean:.3f}, "
                        f"corrupted {corrupted:.3f}): the answer does not depend on the subject here")
    if other_top is not None:
        problems.append(f"the model does not predict {answer!r} (its top token is {other_top!r}, "
                        f"p(answer) = {clean:.3f})")
    return problems
