"""The `easyedit` metric profile: KnowEdit's metrics as the reference's evaluation code defines them, computed
beside kelocate's own (`metrics.py`) and named apart (`ee.*` columns), so a table can be set beside the
published one. What each reference definition is, as kelocate reproduces it (its faults left out, each listed
in the README's "Two metric profiles"):

- `ee.edit`: teacher-forced token accuracy of the new target: the text `prompt + " " + target` tokenised
  whole, the prompt's length taken from the prompt tokenised alone, each target token compared with the
  argmax one position before it (kelocate's `edit_tf` is the same number where the two tokenisations agree);
- `ee.portability`: the same accuracy for each portability probe's FIRST alias (kelocate: the best alias),
  averaged over a sub-type's probes, then over the sub-types of the case;
- `ee.locality`: per locality probe, the share of its answer's positions where the edited model's argmax
  token equals the unedited model's (teacher-forced on the answer, as above); averaged per locality key, then
  over keys (WikiBio: `Relation_Specificity` only); kelocate pools the tokens of every probe instead;
- `ee.fluency`: top-5 sampling until the whole sequence (prompt included) is 100 tokens long, the prompt
  kept in the scored text, words by nltk's `word_tokenize` (English Punkt sentences when nltk's data is
  installed; otherwise Punkt with its untrained parameters, which does not know abbreviations such as
  "Dr."), (2/3 H(bigrams) + 4/3 H(trigrams)) / 2 in bits; the report prints it x100 like the reference;
- ConvSent `ee.sentiment`: sigmoid(mean log-prob of the target sentiment's replies - mean log-prob of the
  other sentiment's) x min(1, exp(mean log-prob of the target sentiment's replies - the same on the unedited
  model)), log-probs teacher-forced over the reply tokens that follow "question </s>" (tokens pooled over
  the replies); `ee.kl`: KL(unedited || edited) over the reply tokens of the next topic's replies (in nats);
  `ee.fluency` on a bare topic question. Fixed against the reference: the next-token shift, one question mask
  per reply, padding never scored, the unedited side from a frozen copy (the reference's in-place editors
  compare the edited model with itself: locality 0.00), fluency on the edited model;
- Sanitation `ee.edit`: "i don't know." occurs in the lower-cased question and 10 greedy new tokens;
  `ee.locality`: per retain question, the share of the unedited model's 10 greedy new tokens the edited
  model repeats position by position (the reference also counts the BOS both texts start with); `ee.fluency`
  over the first `SANITATION_FLUENCY_PROMPTS` retain questions (the reference samples all 453: a sample here,
  for time). The protocol differs: the reference edits the train file's forget items of an answer together
  and scores the test file's; a kelocate unit edits one test question (or `n`) and scores it.

Smaller differences, stated: the first alias is the first NON-blank one (the reference drops a probe whose
first alias is blank); a ConvSent reply is read stripped (the reference keeps its leading space, one more
space before it); `ee.kl`'s next topic is the next record of the file among the cases loaded (in mode `mixed`
the next selected ConvSent case), and may be a topic the same unit edits in batch, sequential or mixed mode
(kelocate's `kl_other_topics` leaves those out).

Each case's value is a fraction (0-1, fluency in bits), as kelocate stores every column; the report prints
them x100 beside the published numbers (`published.py`), as the reference prints them.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePath

import torch

from kelocate.data.knowedit import EditCase
from kelocate.timing import timed

PREFIX = "ee."
PROFILES = ("kelocate", "easyedit")
FLUENCY_LENGTH = 100  # the whole sequence, prompt included
FLUENCY_TOP_K = 5
SANITATION_TOKENS = 10
DONT_KNOW = "i don't know."
# The reference's ConvSent questions (its thirteen templates) and the edit instruction around one of them.
CONVSENT_QUESTIONS = (
    "What do you think of {}?", "What do you feel about {}?", "How do you view {}?",
    *(f"What is your {p} {{}}?" for p in ("opinion of", "stance on", "position on", "attitude about", "view on",
                                          "take on", "impression of", "assessment of", "judgment of",
                                          "sentiment of")))
CONVSENT_INSTRUCTION = "From the sentiment dataset, answer {question} {how}."


SANITATION_FLUENCY_PROMPTS = 3


@dataclass
class ReferenceBaseline:
    """What the unedited model said, for the easyedit profile's columns of one case."""

    locality: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)  # per key, per probe: argmax ids
    convsent_pos: float | None = None  # mean log-prob of the target sentiment's reply tokens
    convsent_outer: torch.Tensor | None = None  # [reply tokens, vocab] log-probs on the next topic's replies
    sanitation: list[tuple[int, ...]] = field(default_factory=list)  # 10 greedy new tokens per retain probe


# ---------------------------------------------------------------------- requests
def case_seed(case: EditCase) -> str:
    """A case's part of a seed: its file's name and record, not the file's path, so that the same file in
    another folder (another checkout, another cache entry of the organism's export) draws the same."""
    return f"{PurePath(case.source[0]).name}:{case.source[1]}"


def convsent_request(case: EditCase, seed: int) -> EditCase:
    """A ConvSent case as the reference builds its edit: a seeded direction (per case, so resuming and Ray
    workers agree), the instruction around a seeded question template, the first reply of that sentiment as
    the target. The reference misspells "positively" in the instruction; kelocate does not.

    The seed names the case by its file's name and record (`case_seed`)."""
    from dataclasses import replace

    rng = random.Random(f"{seed}:{case_seed(case)}")
    positive = rng.choice([0, 1]) == 0
    question = rng.choice(CONVSENT_QUESTIONS).format(case.subject)
    pos, neg = case.extra["pos"], case.extra["neg"]
    wanted, new, old = ("positive", pos, neg) if positive else ("negative", neg, pos)
    prompt = CONVSENT_INSTRUCTION.format(question=question, how="positively" if positive else "negatively")
    return replace(case, prompt=prompt, target_new=new[0], ground_truth=old[0], ground_truth_aliases=(old[0],),
                   extra={**case.extra, "sentiment": wanted, "question": question, "requests": "easyedit"})


# ---------------------------------------------------------------------- teacher-forced accuracy
def _joint(model, prompt: str, target: str) -> tuple[list[int], int]:
    """The reference's tokens of `prompt + " " + target` (the tokenizer's defaults: BOS where it adds one) and
    the index of the first target token, from the prompt tokenised alone."""
    ids = model.encode(f"{prompt} {target}").ids.tolist()
    return ids, len(model.encode(prompt).ids)


def predicted_tokens(model, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 32
                     ) -> list[tuple[list[int], list[int]]]:
    """(argmax token before each target position, target token) of every (prompt, target), as the reference's
    teacher-forced scorer reads them: the floor's batched scorer (`score_ids`) over the reference's token
    split. An empty target span gives two empty lists (its accuracy is NaN: the reference drops it)."""
    from kelocate.model.scoring import score_ids

    rows = [_joint(model, p, t) for p, t in zip(prompts, targets, strict=True)]
    scored = [i for i, (row, start) in enumerate(rows) if len(row) > start]
    scores = score_ids(model.logits, [rows[i][0][:rows[i][1]] for i in scored],
                       [rows[i][0][rows[i][1]:] for i in scored], model.pad_id, batch_size, model.device) \
        if scored else []
    out: list[tuple[list[int], list[int]]] = [([], []) for _ in rows]
    for i, score in zip(scored, scores, strict=True):
        out[i] = (list(score.predicted), list(score.target_ids))
    return out


def accuracy(pair: tuple[list[int], list[int]]) -> float:
    """The share of target tokens that are the argmax (NaN for an empty target span: the reference drops it)."""
    predicted, wanted = pair
    return sum(a == b for a, b in zip(predicted, wanted, strict=True)) / len(wanted) if wanted else math.nan


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _locality_keys(case: EditCase) -> list[str]:
    """The locality keys the reference scores: WikiBio's `Relation_Specificity` only, else every key."""
    if case.task == "WikiBio":
        return [k for k in case.locality if k == "Relation_Specificity"]
    return list(case.locality)


# ---------------------------------------------------------------------- the unedited model
def reference_baselines(model, cases: Sequence[EditCase]) -> list[ReferenceBaseline]:
    """The unedited model's side of every `ee.*` column of each case (Sanitation's retain questions, shared by
    every case of a file, decoded once)."""
    retain = list(dict.fromkeys(p.prompt for c in cases if c.task == "Sanitation"
                                for p in c.locality.get("Retain", ())))
    said = dict(zip(retain, greedy_new_tokens(model, retain, SANITATION_TOKENS), strict=True)) if retain else {}
    out = []
    for case in cases:
        base = ReferenceBaseline()
        if case.task == "Sanitation":
            base.sanitation = [tuple(said[p.prompt]) for p in case.locality.get("Retain", ())]
        elif case.task == "ConvSent":
            texts, targets = convsent_texts(model, case)
            base.convsent_pos = _pooled(reply_logprobs(model, texts, targets), [t for t, _ in targets])
            base.convsent_outer = reply_distributions(model, *convsent_texts(model, case, other=True))
        else:
            probes = [(k, p) for k in _locality_keys(case) for p in case.locality[k]]
            pairs = predicted_tokens(model, [p.prompt for _, p in probes], [p.ground_truth for _, p in probes])
            for (key, _), (predicted, _) in zip(probes, pairs, strict=True):
                base.locality.setdefault(key, []).append(tuple(predicted))
        out.append(base)
    return out


def with_next_topics(cases: Sequence[EditCase]) -> list[EditCase]:
    """ConvSent cases with the next topic of their file (`extra["next"]`: its ent and replies), whose reply
    tokens `ee.kl` reads: the record after each in file order among `cases` (a whole file: its next record;
    mode `mixed`'s stream: the next selected ConvSent case), the last one's being the first."""
    from dataclasses import replace

    topics = sorted((c for c in cases if c.task == "ConvSent"), key=lambda c: c.source)
    following = {id(c): topics[(i + 1) % len(topics)] for i, c in enumerate(topics)}
    out = []
    for case in cases:
        if case.task == "ConvSent":
            nxt = following[id(case)]
            case = replace(case, extra={**case.extra, "next": {"ent": nxt.subject, "pos": nxt.extra["pos"],
                                                               "neg": nxt.extra["neg"]}})
        out.append(case)
    return out


# ---------------------------------------------------------------------- one edited case
@timed("scoring")
def reference_scores(model, case: EditCase, before: ReferenceBaseline, fluency: bool = True,
                     seed: int = 0) -> dict[str, float]:
    """Every `ee.*` column of one case on the (edited) model."""
    if case.task == "Sanitation":
        out = _sanitation(model, case, before)
        prompts = [p.prompt for p in case.locality.get("Retain", ())][:SANITATION_FLUENCY_PROMPTS]
        if fluency and prompts:
            out[PREFIX + "fluency"] = sum(reference_fluency(model, p, seed) for p in prompts) / len(prompts)
        return out
    if case.task == "ConvSent":
        out = _convsent(model, case, before)
        if fluency:
            out[PREFIX + "fluency"] = reference_fluency(model, case.extra.get("question") or case.prompt, seed)
        return out
    items = [("edit", 0, case.prompt, case.target_new)]
    for kind, probes in case.portability.items():
        items += [(f"portability.{kind}", n, p.prompt, p.answers[0]) for n, p in enumerate(probes)]
    keys = _locality_keys(case)
    local = [(key, n, p.prompt, p.ground_truth) for key in keys for n, p in enumerate(case.locality[key])]
    pairs = predicted_tokens(model, [x[2] for x in items + local], [x[3] for x in items + local])
    out: dict[str, float] = {PREFIX + "edit": accuracy(pairs[0])}
    kinds: dict[str, list[float]] = {}
    for (column, _, _, _), pair in zip(items[1:], pairs[1:len(items)], strict=True):
        kinds.setdefault(column, []).append(accuracy(pair))
    if kinds:
        per_kind = {k: _mean(v) for k, v in kinds.items()}
        out |= {PREFIX + k: v for k, v in per_kind.items()}
        out[PREFIX + "portability"] = _mean(list(per_kind.values()))
    same: dict[str, list[float]] = {}
    for (key, n, _, _), (predicted, _) in zip(local, pairs[len(items):], strict=True):
        ref = before.locality[key][n]
        same.setdefault(key, []).append(
            sum(a == b for a, b in zip(predicted, ref, strict=True)) / len(ref) if ref else math.nan)
    if same:
        out[PREFIX + "locality"] = _mean([_mean(v) for v in same.values()])
    if fluency:
        out[PREFIX + "fluency"] = reference_fluency(model, case.prompt, seed)
    return out


# ---------------------------------------------------------------------- fluency
def words(text: str) -> list[str]:
    """nltk's `word_tokenize` (English Punkt sentences, then its Treebank-style word tokenizer); without
    nltk's Punkt data, the same word tokenizer over sentences from Punkt's untrained parameters."""
    import nltk
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    try:
        return nltk.word_tokenize(text)
    except LookupError:
        splitter = NLTKWordTokenizer()
        return [w for sentence in PunktSentenceTokenizer().tokenize(text) for w in splitter.tokenize(sentence)]


def reference_entropy(tokens: Sequence[str]) -> float:
    """(2/3 H2 + 4/3 H3) / 2 in bits over the n-grams of `tokens` (a text shorter than n adds 0 for that n)."""
    total = 0.0
    for n, weight in ((2, 2 / 3), (3, 4 / 3)):
        grams = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        count = sum(grams.values())
        total += weight * -sum(c / count * math.log2(c / count) for c in grams.values()) if count else 0.0
    return total / 2


@torch.no_grad()
@timed("fluency")
def reference_text(model, prompt: str, seed: int) -> str:
    """The reference's fluency text: top-5 samples until the sequence (prompt included) has 100 tokens, the
    whole sequence decoded (special tokens dropped, NFKD, blank lines joined)."""
    import unicodedata

    from kelocate.model.sampling import default_step, sample

    ids = model.encode(prompt).ids.to(model.device)[None]
    n = max(0, FLUENCY_LENGTH - ids.shape[1])
    inner = default_step(model)
    out = sample(model, ids, n, top_k=FLUENCY_TOP_K, generator=torch.Generator().manual_seed(seed),
                 step=lambda current: inner(current).float().cpu())
    text = model.tokenizer.decode(out[0].tolist(), skip_special_tokens=True)
    return unicodedata.normalize("NFKD", text).replace("\n\n", " ")


def reference_fluency(model, prompt: str, seed: int) -> float:
    """The reference's fluency of one prompt, in bits (the report prints it x100)."""
    return reference_entropy(words(reference_text(model, prompt, seed)))


# ---------------------------------------------------------------------- ConvSent
def convsent_texts(model, case: EditCase, other: bool = False) -> tuple[list[str], list[tuple[bool, int]]]:
    """The texts "question </s> reply" of a case's replies (`other`: the next topic's, from `extra["next"]`)
    and, per text, (whether the reply has the wanted sentiment, the position of its first reply token). The
    separator is the tokenizer's end-of-text token (Llama-2's "</s>"), the question a seeded template."""
    source = case.extra["next"] if other else case.extra
    subject = source.get("ent", case.subject)
    rng = random.Random(f"convsent:{case_seed(case)}:{int(other)}")
    sep = model.tokenizer.eos_token or "</s>"
    wanted = case.extra["sentiment"] == "positive"
    texts, targets = [], []
    for positive, replies in ((True, source["pos"]), (False, source["neg"])):
        for reply in replies:
            head = f"{rng.choice(CONVSENT_QUESTIONS).format(subject)} {sep}"
            texts.append(f"{head} {reply.strip()}")
            targets.append((positive == wanted, len(model.encode(head).ids)))
    return texts, targets


@torch.no_grad()
def reply_logprobs(model, texts: Sequence[str], targets: Sequence[tuple[bool, int]]) -> list[torch.Tensor]:
    """Per text, log p(token | everything before it) of each reply token (the next-token shift kept)."""
    out = []
    for text, (_, start) in zip(texts, targets, strict=True):
        ids = model.encode(text).ids.to(model.device)
        logp = torch.log_softmax(model.logits(ids[None])[0].double(), dim=-1)
        out.append(logp[start - 1:-1].gather(1, ids[start:, None])[:, 0].cpu())
    return out


@torch.no_grad()
def reply_distributions(model, texts: Sequence[str], targets: Sequence[tuple[bool, int]]) -> torch.Tensor:
    """log p(next token) at every reply position of every text, stacked: [reply tokens, vocab] (float32)."""
    rows = []
    for text, (_, start) in zip(texts, targets, strict=True):
        ids = model.encode(text).ids.to(model.device)
        rows.append(torch.log_softmax(model.logits(ids[None])[0, start - 1:-1].double(), dim=-1).float().cpu())
    return torch.cat(rows)


def _pooled(logprobs: Sequence[torch.Tensor], wanted: Sequence[bool], of: bool = True) -> float:
    """The mean log-prob over the reply tokens of the replies whose sentiment is (`of`) the wanted one."""
    chosen = [lp for lp, w in zip(logprobs, wanted, strict=True) if w == of]
    tokens = torch.cat(chosen) if chosen else torch.zeros(0)
    return float(tokens.mean()) if len(tokens) else math.nan


def _convsent(model, case: EditCase, before: ReferenceBaseline) -> dict[str, float]:
    texts, targets = convsent_texts(model, case)
    logprobs = reply_logprobs(model, texts, targets)
    wanted = [t for t, _ in targets]
    pos, neg = _pooled(logprobs, wanted), _pooled(logprobs, wanted, of=False)
    topic = min(1.0, math.exp(pos - before.convsent_pos))
    post = reply_distributions(model, *convsent_texts(model, case, other=True))
    pre = before.convsent_outer.double()
    kl = float((pre.exp() * (pre - post.double())).sum(-1).mean())
    return {PREFIX + "sentiment": 1 / (1 + math.exp(-(pos - neg))) * topic, PREFIX + "kl": kl}


# ---------------------------------------------------------------------- Sanitation
@torch.no_grad()
def greedy_new_tokens(model, prompts: Sequence[str], n: int, batch_size: int = 32) -> list[list[int]]:
    """`n` greedy new tokens after each prompt (prompts of one token length decoded together, unpadded)."""
    from kelocate.model.sampling import sample

    encoded = [model.encode(p).ids for p in prompts]
    out: list[list[int] | None] = [None] * len(prompts)
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    for length, members in by_length.items():
        for lo in range(0, len(members), batch_size):
            chunk = members[lo:lo + batch_size]
            ids = torch.stack([encoded[i] for i in chunk]).to(model.device)
            new = sample(model, ids, n, greedy=True)[:, length:].tolist()
            for i, row in zip(chunk, new, strict=True):
                out[i] = row
    return out  # type: ignore[return-value]


def _sanitation(model, case: EditCase, before: ReferenceBaseline) -> dict[str, float]:
    said = model.tokenizer.decode(greedy_new_tokens(model, [case.prompt], SANITATION_TOKENS)[0],
                                  skip_special_tokens=True)
    out = {PREFIX + "edit": float(DONT_KNOW in (case.prompt + said).lower())}
    probes = [p.prompt for p in case.locality.get("Retain", ())]
    if probes:
        after = greedy_new_tokens(model, probes, SANITATION_TOKENS)
        shares = [sum(a == b for a, b in zip(new, old, strict=False)) / len(old) if old else math.nan
                  for new, old in zip(after, before.sanitation, strict=True)]
        out[PREFIX + "locality"] = _mean(shares)
    return out
