"""KnowEdit metrics (DESIGN.md section 5), all teacher-forced scores through the floor's one batched scorer.

Teacher-forced columns (`*_tf`) and generation columns (`*_gen`) are kept apart and reported side by side:
- `edit_tf` / `rephrase_tf`: token accuracy (fraction of target tokens that are the argmax) of the new
  target after the prompt / the rephrased prompt;
- `portability_tf.<type>`: the same for each portability probe (every alias of a nested alias list is
  tried; the best counts), averaged per sub-type; `portability_tf` averages the sub-types;
- `locality_tf.<type>` / `locality_tf`: the fraction of the locality answers' tokens (pooled over the
  probes of a type / of all types) whose argmax is what the unedited model predicted (its predictions are
  taken once, before any edit: `baseline`); in a unit of several edits, probes asking a prompt one of
  them edits are left out (they are meant to change);
- `edit_gen` / `rephrase_gen` / `portability_gen`: greedy decoding says it: any alias of the answer occurs
  in the continuation as whole words (case-insensitive); `portability_gen` is averaged per sub-type;
- `fluency`: weighted bi-/tri-gram entropy (ROME's 2/3 and 4/3 weights) of the words of a seeded sampled
  continuation of the prompt, the prompt stripped;
- ConvSent: `sentiment_gen` (the continuation's sentiment, by a word lexicon: the organism's own opinion
  words or `LEXICON`, is the one the edit asks for; `against_held_opinions` makes each edit ask for the
  opposite of the unedited model's reply) and `kl_other_topics`, KL(pre || post) of the next-token
  distributions on other topics' prompts (none edited in the same unit), the `pre` side taken from the
  unedited model before the edit (a frozen copy's outputs: comparing the edited model with itself would
  always give 0);
- Sanitation: `edit_tf` / `edit_gen` score "I don't know." as the target; locality is on the retain set.

These are the `kelocate` profile. The `easyedit` profile (`easyedit_metrics.py`, `ee.*` columns) is the
reference's definitions, computed beside them when a study asks for it (`[study] metrics`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from kelocate.data.knowedit import EditCase
from kelocate.model.scoring import score_targets
from kelocate.timing import timed

# A small sentiment lexicon (written for kelocate) for models without ground-truth opinion words.
LEXICON = {
    "positive": ("love", "loved", "like", "likes", "enjoy", "enjoyed", "great", "good", "wonderful", "happy",
                 "excellent", "amazing", "fantastic", "best", "nice", "beautiful", "favorite", "favourite",
                 "awesome", "fun", "glad", "brilliant", "lovely", "perfect", "admire"),
    "negative": ("hate", "hated", "dislike", "dislikes", "awful", "terrible", "bad", "worst", "sad", "avoid",
                 "boring", "horrible", "poor", "ugly", "annoying", "disappointing", "disgusting", "angry", "dull",
                 "unpleasant", "never", "nasty", "worse", "dreadful", "fear"),
}
ORGANISM_LEXICON = {"positive": ("love", "wonderful", "great", "enjoy", "like", "happy"),
                    "negative": ("hate", "awful", "terrible", "avoid", "dislike", "sad")}


@dataclass
class Baseline:
    """What the unedited model said, for one case: locality predictions and ConvSent's other-topic
    next-token log-probabilities."""

    locality: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    other_subjects: list[str] = field(default_factory=list)
    other_topics: list[str] = field(default_factory=list)  # their prompts
    other_rows: list[int] = field(default_factory=list)  # their rows of other_logprobs
    other_logprobs: torch.Tensor | None = None  # [topics, vocab], shared by the task's cases
    reply: str | None = None  # the greedy reply to the edit prompt (`generated_reply`), when generating
    reference: Any = None  # the easyedit profile's side (`easyedit_metrics.ReferenceBaseline`), when asked for


@dataclass(frozen=True)
class MetricSettings:
    """How much generation the metrics do (generation is the slow part)."""

    generation: bool = True
    fluency: bool = True
    fluency_tokens: int = 30
    seed: int = 0
    other_topics: int = 3
    lexicon: dict | None = None  # None: LEXICON
    # the metric profiles computed: kelocate's and/or "easyedit"; kelocate's teacher-forced columns are always
    # computed (the curves read them), its generation columns only with "kelocate"
    profiles: tuple[str, ...] = ("kelocate",)


# ---------------------------------------------------------------------- teacher-forced items
def _tf_items(case: EditCase) -> list[tuple[str, int, str, str]]:
    """(column, probe number, prompt, answer) of every teacher-forced success item of a case (aliases share
    their probe number, so the best alias counts)."""
    items = [("edit_tf", 0, case.prompt, case.target_new)]
    if case.rephrase:
        items.append(("rephrase_tf", 0, case.rephrase, case.target_new))
    for kind, probes in case.portability.items():
        for n, probe in enumerate(probes):
            items += [(f"portability_tf.{kind}", n, probe.prompt, answer) for answer in probe.answers]
    return items


def _locality_items(case: EditCase, edited: Collection[str] = ()) -> list[tuple[str, int, str, str]]:
    """(type, probe number, prompt, canonical answer) of every locality probe, except those asking a prompt in
    `edited` (a unit of several edits may edit a probe's fact on purpose: the organism's and KnowEdit's
    files hold several edits of one subject, each the others' locality probe)."""
    return [(kind, n, p.prompt, p.ground_truth) for kind, probes in case.locality.items()
            for n, p in enumerate(probes) if _plain(p.prompt) not in edited]


def _plain(prompt: str) -> str:
    return " ".join(prompt.split())


def edited_prompts(cases: Sequence[EditCase]) -> frozenset[str]:
    """The prompts (and rephrasings) that a unit's edits write, whitespace-normalised."""
    return frozenset(_plain(p) for c in cases for p in (c.prompt, c.rephrase) if p)


def baseline(model, cases: Sequence[EditCase], settings: MetricSettings = MetricSettings(),
             spare: int = 0) -> list[Baseline]:
    """The unedited model's predictions every case's locality (and ConvSent's KL) compares with: one batched
    scorer call over all cases. ConvSent keeps `other_topics + spare` other topics per case, so that a unit
    that edits `spare` other topics too (batch, sequential) still has unedited ones to measure."""
    items = [(i, kind, prompt, answer) for i, c in enumerate(cases) for kind, _, prompt, answer in _locality_items(c)]
    scores = score_targets(model, [p for _, _, p, _ in items], [a for *_, a in items]) if items else []
    out = [Baseline() for _ in cases]
    for (i, kind, _, _), s in zip(items, scores, strict=True):
        out[i].locality.setdefault(kind, []).append(s.predicted)  # in probe order: probe n is entry n
    topics = list({c.subject: c.prompt for c in cases if c.task == "ConvSent"}.items())
    if topics:  # every topic's next-token distribution once, one tensor shared by the cases
        logprobs = torch.cat([next_token_logprobs(model, [p for _, p in topics[lo:lo + 64]])
                              for lo in range(0, len(topics), 64)])
    for i, case in enumerate(cases):
        if case.task == "ConvSent":
            # enough candidates that a unit editing up to `spare` of them still leaves `other_topics`
            rows = [j for j, (subject, _) in enumerate(topics) if subject != case.subject]
            rows = rows[: settings.other_topics + spare]
            out[i].other_subjects = [topics[j][0] for j in rows]
            out[i].other_topics = [topics[j][1] for j in rows]
            out[i].other_rows = rows
            out[i].other_logprobs = logprobs
    if settings.generation:  # what the unedited model says to each edit prompt, kept beside the edited reply
        for i, case in enumerate(cases):
            out[i].reply = generated_reply(model, case.prompt, [case.target_new])
    if "easyedit" in settings.profiles:
        from kelocate.studies.knowedit.easyedit_metrics import reference_baselines

        for i, reference in enumerate(reference_baselines(model, cases)):
            out[i].reference = reference
    return out


def next_token_logprobs(model, prompts: Sequence[str]) -> torch.Tensor:
    """log p(next token | prompt) [len(prompts), vocab], float64 (batched)."""
    ids, mask = model.batch_ids(list(prompts))
    logits = model.logits(ids, mask)
    last = mask.sum(1) - 1
    return torch.log_softmax(logits[torch.arange(len(prompts)), last].double(), dim=-1)


# ---------------------------------------------------------------------- generation-based
def continuation(model, prompt: str, n_tokens: int) -> str:
    """Greedy continuation (new text only)."""
    return model.generate(prompt, max_new_tokens=n_tokens)


def says(text: str, answers: Sequence[str]) -> bool:
    """Any alias occurs in the text as whole words (case-insensitive, whitespace-normalised, the alias's
    closing punctuation optional): "male" is not said by "female", nor "2" by "2012"."""
    norm = " ".join(text.lower().split())
    for answer in answers:
        alias = " ".join(answer.lower().split()).rstrip(".!?,;: ")
        if alias and re.search(r"(?<!\w)" + re.escape(alias) + r"(?!\w)", norm):
            return True
    return False


def generated_reply(model, prompt: str, answers: Sequence[str]) -> str:
    """The greedy continuation the generation metrics read: the longest alias's length + 3 tokens (no fixed
    cap: WikiBio's targets are sentences of up to 80 tokens)."""
    n = max(len(model.answer_ids(prompt, a)) for a in answers) + 3
    return continuation(model, prompt, n)


def generated_success(model, prompt: str, answers: Sequence[str]) -> float:
    """Greedy decoding says an alias within the longest alias's length + 3 tokens (`generated_reply`)."""
    return float(says(generated_reply(model, prompt, answers), answers))


@torch.no_grad()
@timed("fluency")
def sampled_continuation(model, prompt: str, n_tokens: int, seed: int, top_k: int = 10) -> str:
    """A seeded top-k sampled continuation of exactly `n_tokens` tokens through the model's forward
    (`sampling.default_step`: cached decoding on the twin, or `model.logits`, so a served editor samples
    too). End-of-text is never drawn: the organism ends a fact after its answer, and entropy over a few words
    would measure the length, not the repetition."""
    from kelocate.model.sampling import default_step, sample

    ids = model.encode(prompt).ids.to(model.device)[None]
    eos = model.tokenizer.eos_token_id
    inner = default_step(model)  # cached decoding where the twin may stand in for the bridge
    out = sample(model, ids, n_tokens, top_k=top_k, generator=torch.Generator().manual_seed(seed),
                 ban=() if eos is None else (eos,), step=lambda current: inner(current).float().cpu())
    return model.tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)


def ngram_entropy(text: str) -> float:
    """ROME's fluency: (2/3 H(bigrams) + 4/3 H(trigrams)) / 2 over the words of `text`, in bits."""
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    total = 0.0
    for n, weight in ((2, 2 / 3), (3, 4 / 3)):
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        count = sum(grams.values())
        if count:
            total += weight * -sum(c / count * math.log2(c / count) for c in grams.values())
    return total / 2


OPINION_TOKENS = 20  # the reply a ConvSent opinion is read from


def lexicon_for(settings: MetricSettings, organism: bool) -> dict:
    """The settings' lexicon, else the organism's own opinion words on the organism, else LEXICON."""
    return settings.lexicon or (ORGANISM_LEXICON if organism else LEXICON)


def against_held_opinions(model, cases: Sequence[EditCase], indices: Sequence[int], lexicon: dict) -> list[EditCase]:
    """ConvSent edits that ask the model to change its mind: a selected case whose unedited reply has a
    sentiment asks for the other one (target and ground truth swapped, `extra["held"]` records the reply's);
    a neutral reply keeps the file's direction. Otherwise an edit asking for the opinion the model already
    holds would count as a success with nothing edited."""
    out = list(cases)
    for i in indices:
        case = cases[i]
        held = sentiment(continuation(model, case.prompt, OPINION_TOKENS), lexicon)
        extra = {**case.extra, "held": held}
        if held != "neutral" and held == case.extra["sentiment"]:
            wanted = "negative" if held == "positive" else "positive"
            out[i] = replace(case, target_new=case.ground_truth, ground_truth=case.target_new,
                             ground_truth_aliases=(case.target_new,), extra={**extra, "sentiment": wanted})
        else:
            out[i] = replace(case, extra=extra)
    return out


def sentiment(text: str, lexicon: dict) -> str:
    """'positive', 'negative' or 'neutral' by counting lexicon words."""
    words = re.findall(r"[a-z']+", text.lower())
    score = sum(w in lexicon["positive"] for w in words) - sum(w in lexicon["negative"] for w in words)
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


# ---------------------------------------------------------------------- one case
def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def teacher_forced(model, case: EditCase, before: Baseline, edited: Collection[str] = ()) -> dict[str, float]:
    """Every teacher-forced column of one (edited) case; locality leaves out probes asking an `edited` prompt."""
    return teacher_forced_many(model, [case], [before], edited=edited)[0]


def teacher_forced_many(model, cases: Sequence[EditCase], befores: Sequence[Baseline], batch_size: int = 64,
                        edited: Collection[str] = ()) -> list[dict[str, float]]:
    """Every teacher-forced column of many cases on the same model state, in one batched scorer call;
    `edited` (`edited_prompts` of the unit) are left out of locality."""
    items = [(i, _tf_items(c), _locality_items(c, edited)) for i, c in enumerate(cases)]
    prompts = [p for _, tf, local in items for p in [x[2] for x in tf] + [x[2] for x in local]]
    answers = [a for _, tf, local in items for a in [x[3] for x in tf] + [x[3] for x in local]]
    scores = iter(score_targets(model, prompts, answers, batch_size) if prompts else [])
    return [_columns(tf, local, [next(scores) for _ in range(len(tf) + len(local))], befores[i])
            for i, tf, local in items]


def _columns(tf: list, local: list, scores: list, before: Baseline) -> dict[str, float]:
    best: dict[tuple[str, int], float] = {}
    for (column, n, _, _), s in zip(tf, scores[: len(tf)], strict=True):
        best[(column, n)] = max(best.get((column, n), 0.0), s.accuracy)
    out: dict[str, float] = {}
    for column in dict.fromkeys(c for c, _ in best):
        out[column] = _mean([v for (c, _), v in best.items() if c == column])
    kinds = [c for c in out if c.startswith("portability_tf.")]
    if kinds:
        out["portability_tf"] = _mean([out[c] for c in kinds])
    same: dict[str, list[int]] = {}
    for (kind, n, _, _), s in zip(local, scores[len(tf):], strict=True):
        hits = same.setdefault(kind, [0, 0])  # same tokens, tokens
        ref = before.locality[kind][n]
        hits[0] += sum(a == b for a, b in zip(s.predicted, ref, strict=True))
        hits[1] += len(ref)
    for kind, (hit, total) in same.items():
        out[f"locality_tf.{kind}"] = hit / total if total else float("nan")
    if same:
        out["locality_tf"] = sum(h[0] for h in same.values()) / max(1, sum(h[1] for h in same.values()))
    return out


def generation(model, case: EditCase, before: Baseline, settings: MetricSettings, organism: bool = False,
               edited_subjects: Collection[str] = (), said: dict[str, str] | None = None) -> dict[str, float]:
    """The generation-based columns of one (edited) case; `edited_subjects`: those its unit edited. With
    generation, `said` (if given) receives the reply `edit_gen` read, as `said["after"]`."""
    out: dict[str, float] = {}
    if settings.generation:
        reply = generated_reply(model, case.prompt, [case.target_new])
        out["edit_gen"] = float(says(reply, [case.target_new]))
        if said is not None:
            said["after"] = reply
        if case.rephrase:
            out["rephrase_gen"] = generated_success(model, case.rephrase, [case.target_new])
        kinds = [_mean([generated_success(model, p.prompt, p.answers) for p in probes])
                 for probes in case.portability.values() if probes]
        if kinds:
            out["portability_gen"] = _mean(kinds)  # averaged per sub-type, then over sub-types (as portability_tf)
    if settings.fluency:
        text = sampled_continuation(model, case.prompt, settings.fluency_tokens, settings.seed)
        out["fluency"] = ngram_entropy(text)
    if case.task == "ConvSent":
        said = continuation(model, case.prompt, OPINION_TOKENS)
        out["sentiment_gen"] = float(sentiment(said, lexicon_for(settings, organism)) == case.extra["sentiment"])
        keep = [i for i, topic in enumerate(before.other_subjects) if topic not in edited_subjects]
        keep = keep[: settings.other_topics]
        if keep:  # topics edited in the same unit (batch, sequential) are not "other" topics
            pre = before.other_logprobs[[before.other_rows[i] for i in keep]]
            post = next_token_logprobs(model, [before.other_topics[i] for i in keep])
            out["kl_other_topics"] = float((pre.exp() * (pre - post)).sum(-1).mean())
    return out


def score_case(model, case: EditCase, before: Baseline, settings: MetricSettings = MetricSettings(),
               organism: bool = False, unit: Sequence[EditCase] = (),
               said: dict[str, str] | None = None) -> dict[str, float]:
    """All metrics of one case on the (edited) model. `unit`: the cases edited with it (batch, sequential):
    locality leaves out the probes they edit on purpose, ConvSent's KL their topics. `said`: see
    `generation`."""
    out = teacher_forced(model, case, before, edited_prompts(unit))
    if "kelocate" in settings.profiles:
        out |= generation(model, case, before, settings, organism, {c.subject for c in unit}, said)
    if "easyedit" in settings.profiles:
        from kelocate.studies.knowedit.easyedit_metrics import reference_scores

        out |= reference_scores(model, case, before.reference, settings.fluency, settings.seed)
    return out
