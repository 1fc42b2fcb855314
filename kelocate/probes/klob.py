"""KLoB (Ju & Zhang): file loaders and the RSim scores of a knowledge locator.

File formats (JSON lines; a trailing "_" marks where the answer goes and is stripped into a prompt):

- KLoB-c: ``{"prompts": [3 paraphrases], "knowledge": [subject, "relation_(Pid)", object]}``
- KLoB-r: ``{"single_knowledge": [s, r1, o1], "knowledge_chain": [s, r1, o1, r2, o2],
  "single_knowlege_prompts": [3 prompts], "knowlege_chain_prompt": "..."}`` (the public files spell
  "knowlege"; "knowledge" is accepted too)
- KLoB-u: one JSON string of random words per line, ending in " _". Without the file, `random_word_inputs`
  makes such lines from the whole-word tokens of the model's own vocabulary (seeded).

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
import json
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kelocate.errors import KelocateError
from kelocate.locate.location import Location

BLANK = "_"
EPS = 1e-9

# ====================================================================== records


@dataclass(frozen=True)
class KlobFact:
    """One KLoB-c fact: paraphrase prompts (blank stripped) of (subject, relation, object)."""

    prompts: tuple[str, ...]
    subject: str
    relation: str  # as in the file, e.g. "native_(P103)"
    object: str
    source: str = ""  # "file:line"

    @property
    def relation_id(self) -> str | None:
        """The Wikidata property id in the relation name ("P103"), if any."""
        return _relation_id(self.relation)


@dataclass(frozen=True)
class KlobChain:
    """One KLoB-r record: a single-hop fact, its paraphrases, and the two-hop chain prompt that uses it."""

    subject: str
    relation: str
    object: str
    relation2: str
    object2: str
    prompts: tuple[str, ...]  # single-hop paraphrases (answer: object)
    chain_prompt: str  # two-hop prompt (answer: object2)
    source: str = ""

    @property
    def fact(self) -> KlobFact:
        """The single-hop fact as a KLoB-c record."""
        return KlobFact(self.prompts, self.subject, self.relation, self.object, self.source)


def _relation_id(relation: str) -> str | None:
    match = re.search(r"\((P\d+)\)", relation)
    return match.group(1) if match else None


# ====================================================================== loading


def strip_blank(text: str) -> str:
    """'The capital of France is _' -> 'The capital of France is' (the trailing blank must be there)."""
    if not isinstance(text, str):
        raise ValueError(f"expected a string prompt, got {type(text).__name__}")
    body = text.rstrip()
    if not body.endswith(BLANK):
        raise ValueError(f"prompt {text!r} does not end with the blank {BLANK!r} that marks the answer")
    prompt = body[: -len(BLANK)].rstrip()
    if not prompt:
        raise ValueError(f"prompt {text!r} is empty once the blank is removed")
    return prompt


def _lines(path: str | os.PathLike) -> Iterator[tuple[int, str, Any]]:
    """(line number, location text, parsed JSON) of every non-blank line; a bad file or line raises."""
    p = Path(path)
    if not p.is_file():
        raise KelocateError(f"KLoB file {str(p)!r} does not exist; pass an existing .jsonl file (--data DIR)")
    with p.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{p}:{number}"
            try:
                yield number, where, json.loads(line)
            except json.JSONDecodeError as exc:
                msg = f"{where}: not valid JSON ({exc.msg}); each line must be one JSON value"
                raise KelocateError(msg) from None


def _strings(value: Any, n: int | None, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{what} must be a list of non-empty strings")
    if n is not None and len(value) != n:
        raise ValueError(f"{what} must have {n} items, found {len(value)}")
    return [v.strip() for v in value]


def _get(record: dict, *keys: str) -> Any:
    for key in keys:
        if key in record:
            return record[key]
    raise ValueError(f"missing key {keys[0]!r}")


def load_klob_c(path: str | os.PathLike) -> list[KlobFact]:
    """Read a KLoB-c file; a malformed line raises a KelocateError naming the file and line."""
    facts = []
    for _, where, record in _lines(path):
        try:
            if not isinstance(record, dict):
                raise ValueError("expected a JSON object")
            prompts = [strip_blank(p) for p in _strings(_get(record, "prompts"), None, "'prompts'")]
            if not prompts:
                raise ValueError("'prompts' is empty")
            subject, relation, obj = _strings(_get(record, "knowledge"), 3, "'knowledge'")
        except ValueError as exc:
            raise KelocateError(f"{where}: malformed KLoB-c record: {exc}; expected "
                                '{"prompts": ["... _", ...], "knowledge": [subject, relation, object]}'
                                ) from None
        facts.append(KlobFact(tuple(prompts), subject, relation, obj, where))
    return facts


def load_klob_r(path: str | os.PathLike) -> list[KlobChain]:
    """Read a KLoB-r file (both the "knowlege" and "knowledge" spellings of the keys)."""
    chains = []
    for _, where, record in _lines(path):
        try:
            if not isinstance(record, dict):
                raise ValueError("expected a JSON object")
            s, r1, o1 = _strings(_get(record, "single_knowledge", "single_knowlege"), 3, "'single_knowledge'")
            chain = _strings(_get(record, "knowledge_chain", "knowlege_chain"), 5, "'knowledge_chain'")
            if chain[:3] != [s, r1, o1]:
                raise ValueError("'knowledge_chain' does not start with 'single_knowledge'")
            prompts = _get(record, "single_knowlege_prompts", "single_knowledge_prompts")
            prompts = [strip_blank(p) for p in _strings(prompts, None, "'single_knowledge_prompts'")]
            if not prompts:
                raise ValueError("'single_knowledge_prompts' is empty")
            chain_prompt = _get(record, "knowlege_chain_prompt", "knowledge_chain_prompt")
            if not isinstance(chain_prompt, str):
                raise ValueError("'knowledge_chain_prompt' must be a string")
            chain_prompt = strip_blank(chain_prompt)
        except ValueError as exc:
            raise KelocateError(f"{where}: malformed KLoB-r record: {exc}; expected single_knowledge, "
                                "knowledge_chain, single_knowlege_prompts, knowlege_chain_prompt") from None
        chains.append(KlobChain(s, r1, o1, chain[3], chain[4], tuple(prompts), chain_prompt, where))
    return chains


def load_klob_u(path: str | os.PathLike) -> list[str]:
    """Read a KLoB-u file: one JSON string of random words per line; returns the prompts (blank stripped)."""
    prompts = []
    for _, where, record in _lines(path):
        try:
            if not isinstance(record, str):
                raise ValueError(f"expected a JSON string, found {type(record).__name__}")
            prompts.append(strip_blank(record))
        except ValueError as exc:
            msg = f"{where}: malformed KLoB-u line: {exc}; expected a JSON string ending in ' _'"
            raise KelocateError(msg) from None
    return prompts


# the names the organism exporter and the public release use for the three files
KLOB_FILES = {"c": ("KLoB-c.jsonl", "klob_c.jsonl"), "r": ("KLoB-r.jsonl", "klob_r.jsonl"),
              "u": ("KLoB-u.jsonl", "klob_u.jsonl")}


def find_klob_file(directory: str | os.PathLike, part: str) -> Path | None:
    """The KLoB-{part} file in `directory` or in its KLoB/ sub-folder (the organism export's layout)."""
    for folder in (Path(directory), Path(directory) / "KLoB"):
        for name in KLOB_FILES[part]:
            if (folder / name).is_file():
                return folder / name
    return None


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
