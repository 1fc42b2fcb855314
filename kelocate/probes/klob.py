"""KLoB (Ju & Zhang): the RSim scores of a knowledge locator, and random-word inputs.

The KLoB files (KLoB-c facts, KLoB-r chains, KLoB-u random-word lines) are read by `kelocate.data.klob`.
Without a KLoB-u file, `random_word_inputs` makes such lines from the whole-word tokens of the model's own
vocabulary (seeded), ending in the blank " _" like the file's.

Scores (all RSim = max((Sim_cand - Sim_all) / (1 - Sim_all), 0) with Sim_cand the mean over facts; an
average of per-fact clipped values would be biased upwards, e.g. when nearly all locations coincide):

- consistency: Sim_cand = mean similarity of the locations of one fact's paraphrases; Sim_all = mean
  similarity of locations of prompts of *different* facts.
- relevance: Sim_cand = mean similarity between a fact's single-hop prompts and its two-hop chain prompt;
  Sim_all = the same for single-hop prompts against the chain prompts of other facts.
- unbiasedness: Sim_cand as in consistency; Sim_all = mean similarity between factual locations and
  locations found on random-word inputs (a locator that finds the same places for noise as for facts
  is biased); reported with the mean layer-score profiles on both inputs and their distance.

When 1 - Sim_all is (near) zero every location looks the same and nothing can be told apart: RSim is 0.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kelocate.data.klob import BLANK
from kelocate.errors import KelocateError
from kelocate.locate.location import Location

EPS = 1e-9

# ====================================================================== random-word inputs

SPACE_MARKS = ("\u2581", "\u0120")  # a word-initial token: SentencePiece '▁word', byte-level BPE 'Ġword'
MIN_WORDS = 2


def _is_word(text: str) -> bool:
    """ASCII letters only, at least two of them (single letters are mostly word pieces, not words)."""
    return len(text) >= 2 and text.isascii() and text.isalpha()


def vocabulary_words(tokenizer) -> list[str]:
    """The whole words of a tokenizer's vocabulary (sorted), to build random-word inputs from.

    A word is a token that decodes to letters only and, where the tokenizer marks a leading space
    ('▁' or 'Ġ'), carries that mark, so it starts a word and is not a piece of one.
    """
    pieces = [p for p in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))) if isinstance(p, str)]
    marked = {p[1:] for p in pieces if p[:1] in SPACE_MARKS and _is_word(p[1:])}
    if marked:
        return sorted(marked)
    special = set(tokenizer.all_special_tokens)
    return sorted({p for p in pieces if p not in special and _is_word(p)})


def random_word_inputs(tokenizer, n: int, lengths: Sequence[int] = (6, 7, 8, 9, 10), seed: int = 0) -> list[str]:
    """`n` KLoB-u lines of random whole words of the tokenizer's vocabulary, each ending in " _".

    Word counts come from `lengths` (a seeded shuffle, cycled), so passing the word counts of the
    factual prompts gives random inputs of the same length distribution. Deterministic for a seed.
    """
    if n < 0 or not lengths or min(lengths) < 1:
        raise KelocateError(f"cannot make {n} random-word inputs of word counts {list(lengths)[:5]}; "
                            "ask for n >= 0 inputs of at least one word each")
    words = vocabulary_words(tokenizer)
    if len(words) < MIN_WORDS:
        raise KelocateError(f"the tokenizer has only {len(words)} whole-word token(s) to draw random words "
                            "from; pass a KLoB-u file of random-word sentences (--klob-u FILE)")
    rng = random.Random(seed)
    order = list(lengths)
    rng.shuffle(order)
    lines = []
    for i in range(n):
        lines.append(" ".join(rng.choice(words) for _ in range(order[i % len(order)])) + " " + BLANK)
    return lines


# ====================================================================== locations and similarity


def set_similarity(a: frozenset | set, b: frozenset | set, mode: str = "jaccard") -> float:
    """Jaccard |A & B| / |A | B|, or plain overlap |A & B| / min(|A|, |B|); two empty sets are identical."""
    if not a and not b:
        return 1.0
    inter = len(a & b)
    if mode == "jaccard":
        return inter / len(a | b)
    if mode == "overlap":
        return inter / min(len(a), len(b)) if a and b else 0.0
    raise KelocateError(f"unknown similarity {mode!r}; use jaccard or overlap")


def layer_similarity(a: Location, b: Location, k: int, mode: str = "jaccard") -> float:
    """Overlap of the top-k layers of two locations."""
    return set_similarity(a.top_layers(k), b.top_layers(k), mode)


def neuron_similarity(a: Location, b: Location, mode: str = "jaccard") -> float:
    """Overlap of the neuron sets of two locations."""
    if a.neurons is None or b.neurons is None:
        raise KelocateError("this location has no neuron set; use a layer-level similarity")
    return set_similarity(a.neurons, b.neurons, mode)


Similarity = Callable[[Location, Location], float]


def rsim(sim_cand: float, sim_all: float) -> float:
    """KLoB's relative similarity max((Sim_cand - Sim_all) / (1 - Sim_all), 0); 0 when Sim_all -> 1."""
    if 1.0 - sim_all <= EPS:
        return 0.0
    return max((sim_cand - sim_all) / (1.0 - sim_all), 0.0)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _pairs_within(groups: Sequence[Sequence[Location]], sim: Similarity) -> list[float]:
    """Per group, the mean similarity over its pairs (groups of fewer than 2 are skipped -> nan)."""
    out = []
    for group in groups:
        pairs = [sim(a, b) for a, b in itertools.combinations(group, 2)]
        out.append(_mean(pairs))
    return out


def _pairs_across(groups: Sequence[Sequence[Location]], sim: Similarity, max_pairs: int, seed: int) -> float:
    """Mean similarity of locations from different groups (all pairs, or a seeded sample of max_pairs)."""
    flat = [(g, loc) for g, group in enumerate(groups) for loc in group]
    pairs = [(i, j) for i in range(len(flat)) for j in range(i + 1, len(flat)) if flat[i][0] != flat[j][0]]
    if not pairs:
        raise KelocateError("at least two facts are needed to compare against (Sim_all); use more data")
    if len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in rng.choice(len(pairs), size=max_pairs, replace=False)]
    return _mean([sim(flat[i][1], flat[j][1]) for i, j in pairs])


@dataclass
class RSimScore:
    """An RSim value with the similarities it came from (`per_fact`: each fact's Sim_cand)."""

    rsim: float
    sim_cand: float
    sim_all: float
    per_fact: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"rsim": self.rsim, "sim_cand": self.sim_cand, "sim_all": self.sim_all,
                "per_fact_sim_cand": self.per_fact}


def _score(cands: list[float], sim_all: float) -> RSimScore:
    valid = [float(c) for c in cands if not np.isnan(c)]
    sim_cand = _mean(valid)
    return RSimScore(rsim(sim_cand, sim_all), sim_cand, sim_all, valid)


def consistency(groups: Sequence[Sequence[Location]], sim: Similarity, max_pairs: int = 20000,
                seed: int = 0) -> RSimScore:
    """RSim of paraphrase locations: groups[i] holds the locations of fact i's paraphrases."""
    return _score(_pairs_within(groups, sim), _pairs_across(groups, sim, max_pairs, seed))


def relevance(singles: Sequence[Sequence[Location]], chains: Sequence[Location],
              sim: Similarity) -> RSimScore:
    """RSim between each fact's single-hop locations and its own chain prompt's location vs other chains'."""
    if len(singles) != len(chains):
        raise ValueError("one chain location per fact is needed")
    if len(chains) < 2:
        raise KelocateError("at least two KLoB-r records are needed for relevance; use more data")
    cands, others = [], []
    for i, group in enumerate(singles):
        cands.append(_mean([sim(s, chains[i]) for s in group]))
        others.extend(sim(s, c) for s in group for j, c in enumerate(chains) if j != i)
    return _score(cands, _mean(others))


def profile(locations: Sequence[Location]) -> np.ndarray:
    """Mean layer-score profile, each location's scores scaled to sum 1 (absolute values)."""
    rows = []
    for loc in locations:
        s = np.abs(np.asarray(loc.layer_scores, dtype=float))
        rows.append(s / s.sum() if s.sum() > 0 else np.full_like(s, 1.0 / len(s)))
    return np.mean(rows, axis=0)


def unbiasedness(groups: Sequence[Sequence[Location]], randoms: Sequence[Location], sim: Similarity,
                 max_pairs: int = 20000, seed: int = 0) -> dict[str, Any]:
    """Factual vs random-word locations: RSim with the factual-random similarity as the baseline.

    Also returns the mean layer profiles on factual and on random inputs and their total-variation
    distance (0: the locator scores layers the same whatever the input).
    """
    if not randoms:
        raise KelocateError("no random-word locations; generate random-word inputs or pass a KLoB-u file")
    rng = np.random.default_rng(seed)
    facts = [loc for group in groups for loc in group]
    pairs = [(i, j) for i in range(len(facts)) for j in range(len(randoms))]
    if len(pairs) > max_pairs:
        pairs = [pairs[i] for i in rng.choice(len(pairs), size=max_pairs, replace=False)]
    sim_fr = _mean([sim(facts[i], randoms[j]) for i, j in pairs])
    score = _score(_pairs_within(groups, sim), sim_fr)
    out: dict[str, Any] = {**score.to_dict(), "sim_fact_random": sim_fr}
    if all(loc.layer_scores is not None for loc in [*facts, *randoms]):
        out.update(compare_profiles(facts, randoms))
    return out


def compare_profiles(facts: Sequence[Location], randoms: Sequence[Location]) -> dict[str, Any]:
    """Mean layer profiles on factual and on random inputs and their total-variation distance."""
    pf, pr = profile(facts), profile(randoms)
    return {"profile_fact": pf.tolist(), "profile_random": pr.tolist(),
            "profile_distance": float(0.5 * np.abs(pf - pr).sum())}
