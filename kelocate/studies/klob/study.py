"""The KLoB study (the comprehensive study's Figure 8): RSim of a locator as a curve over top-k layers.

For every KLoB-c fact the locator runs on each paraphrase (answer = the object, subject from the
`knowledge` triple); for every KLoB-r record on each single-hop prompt and on the two-hop chain prompt
(answer = the chain's final object, same subject); on random-word sentences with the model's own top token
as the answer and the sentence's first word as the "subject" (causal tracing must corrupt something). The
random-word sentences are generated from the model's own vocabulary (seeded), or read from a KLoB-u file.
Layer-level locations are compared by the overlap of their top-k layers, k = 1..n_layers.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kelocate.data.klob import KlobChain, KlobFact, klob_folder, load_klob_c, load_klob_r, load_klob_u, strip_blank
from kelocate.errors import KelocateError
from kelocate.locate.location import Location
from kelocate.probes.klob import (
    compare_profiles,
    consistency,
    layer_similarity,
    neuron_similarity,
    random_word_inputs,
    relevance,
    unbiasedness,
)


@dataclass
class KlobData:
    """The records a study runs on, the files they came from, and where the random-word inputs came from."""

    facts: list[KlobFact]
    chains: list[KlobChain]
    randoms: list[str]
    files: dict[str, str | None] = field(default_factory=dict)
    random_inputs: dict[str, Any] = field(default_factory=lambda: _no_randoms(None))  # where they came from

    @property
    def n_prompts(self) -> int:
        """Prompts a study locates: every paraphrase, every chain's prompts and chain prompt, every random."""
        return (sum(len(f.prompts) for f in self.facts) + sum(len(c.prompts) + 1 for c in self.chains)
                + len(self.randoms))


def _no_randoms(seed: int | None) -> dict[str, Any]:
    """The `random_inputs` entry when there are none (no tokenizer and no file, or --random-limit 0)."""
    return {"source": None, "path": None, "seed": seed, "n": 0, "description": "none"}


def _sample(items: list, limit: int | None, rng: random.Random) -> list:
    if limit is None or limit >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.sample(range(len(items)), limit))]


def _from_file(path: Path, n: int, rng: random.Random, seed: int) -> tuple[list[str], dict[str, Any]]:
    """A seeded sample of `n` sentences of a KLoB-u file, with where they came from."""
    lines = load_klob_u(path)
    randoms = _sample(lines, n, rng)
    about = f"{path} ({len(randoms)} of {len(lines)} lines, seed {seed})"
    return randoms, {"source": "file", "path": str(path), "seed": seed, "n": len(randoms), "description": about}


def _generated(tokenizer, facts: list[KlobFact], n: int, seed: int) -> tuple[list[str], dict[str, Any]]:
    """`n` random-word inputs from the model's vocabulary, word counts as in the factual prompts."""
    lengths = [len(q.split()) for f in facts for q in f.prompts] or [8]
    randoms = [strip_blank(line) for line in random_word_inputs(tokenizer, n, lengths, seed)]
    about = f"generated from the model vocabulary, seed {seed}, {len(randoms)} inputs"
    return randoms, {"source": "vocabulary", "path": None, "seed": seed, "n": len(randoms), "description": about}


def load_klob_data(directory: str | os.PathLike, limit: int | None = 40, random_limit: int | None = None,
                   klob_u: str | os.PathLike | None = None, seed: int = 0, tokenizer=None) -> KlobData:
    """KLoB-c and KLoB-r from `directory` (at most `limit` records each, a seeded sample) and random inputs.

    The random-word inputs for unbiasedness are `random_limit` of them (default: as many as the factual
    prompts): a seeded sample of the KLoB-u file `klob_u` if given, else generated from the whole words of
    `tokenizer`'s vocabulary with the factual prompts' word counts; none without either (or with 0).
    """
    c_file, r_file, _ = klob_folder(directory)  # the folder's own KLoB-u is not used: `klob_u` names the file
    rng = random.Random(seed)
    facts = _sample(load_klob_c(c_file), limit, rng)
    chains = _sample(load_klob_r(r_file), limit, rng)
    n = random_limit if random_limit is not None else sum(len(f.prompts) for f in facts)
    randoms: list[str] = []
    about = _no_randoms(seed)
    if klob_u is not None:
        randoms, about = _from_file(Path(klob_u), n, rng, seed)
    elif tokenizer is not None and n > 0:
        randoms, about = _generated(tokenizer, facts, n, seed)
    return KlobData(facts, chains, randoms, {"c": str(c_file), "r": str(r_file), "u": about["path"]}, about)


def random_subject(sentence: str) -> str:
    """The word a causal trace corrupts in a random-word sentence: its first word."""
    return sentence.split()[0]


Progress = Callable[[int], None]


@dataclass
class _Located:
    groups: list[list[Location]] = field(default_factory=list)  # KLoB-c paraphrases per fact
    singles: list[list[Location]] = field(default_factory=list)  # KLoB-r single-hop per record
    chains: list[Location] = field(default_factory=list)  # KLoB-r chain prompt per record
    randoms: list[Location] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # every location, for the JSON
    skipped: list[dict[str, str]] = field(default_factory=list)


def _locate_all(model, locator, data: KlobData, advance: Progress) -> _Located:
    out = _Located()

    def run(prompt: str, answer: str | None, subject: str | None, role: str, source: str) -> Location:
        try:
            loc = locator.locate(model, prompt, answer=answer, subject=subject)
        finally:
            advance(1)
        scores = None if loc.layer_scores is None else [round(float(s), 6) for s in loc.layer_scores]
        out.rows.append({"role": role, "source": source, "prompt": prompt, "answer": answer,
                         "subject": subject, "layer_scores": scores,
                         "neurons": None if loc.neurons is None else sorted(map(list, loc.neurons))})
        return loc

    for fact in data.facts:
        try:
            group = [run(q, fact.object, fact.subject, "paraphrase", fact.source) for q in fact.prompts]
            out.groups.append(group)
        except KelocateError as exc:
            out.skipped.append({"source": fact.source, "reason": str(exc)})
    for chain in data.chains:
        try:
            singles = [run(q, chain.object, chain.subject, "single", chain.source) for q in chain.prompts]
            hop = run(chain.chain_prompt, chain.object2, chain.subject, "chain", chain.source)
            out.singles.append(singles)
            out.chains.append(hop)
        except KelocateError as exc:
            out.skipped.append({"source": chain.source, "reason": str(exc)})
    for sentence in data.randoms:
        try:
            out.randoms.append(run(sentence, None, random_subject(sentence), "random", "KLoB-u"))
        except KelocateError as exc:
            out.skipped.append({"source": f"KLoB-u: {sentence[:40]}", "reason": str(exc)})
    return out


def run_klob_study(model, locator, data: KlobData, similarity: str = "jaccard",
                   progress: Progress | None = None, seed: int = 0) -> dict[str, Any]:
    """Locate every prompt, then RSim of consistency, relevance and unbiasedness for k = 1..n_layers."""
    if not data.facts or not data.chains:
        raise KelocateError("the KLoB data holds no KLoB-c facts or no KLoB-r records; pass --data with both")
    total = data.n_prompts
    t0 = time.perf_counter()
    found = _locate_all(model, locator, data, progress or (lambda n: None))
    if len(found.groups) < 2 or len(found.chains) < 2:
        reasons = "; ".join(s["reason"] for s in found.skipped[:2])
        raise KelocateError(f"too few records could be located (facts {len(found.groups)}, chains "
                            f"{len(found.chains)}); first reasons: {reasons or 'none'}")
    n_layers = model.n_layers
    ks = list(range(1, n_layers + 1))
    curves: dict[str, list[float] | None] = {"consistency": [], "relevance": [],
                                             "unbiasedness": [] if found.randoms else None}
    details: dict[str, list[dict[str, Any]]] = {name: [] for name in curves}
    layer_level = all(loc.layer_scores is not None for g in found.groups for loc in g)
    if layer_level:
        for k in ks:
            def sim(a: Location, b: Location, k: int = k) -> float:
                return layer_similarity(a, b, k, similarity)

            scores = {"consistency": consistency(found.groups, sim, seed=seed).to_dict(),
                      "relevance": relevance(found.singles, found.chains, sim).to_dict()}
            if found.randoms:
                scores["unbiasedness"] = unbiasedness(found.groups, found.randoms, sim, seed=seed)
            for name, score in scores.items():
                curves[name].append(score["rsim"])
                details[name].append({"k": k, "rsim": score["rsim"], "sim_cand": score["sim_cand"],
                                      "sim_all": score["sim_all"]})
    result: dict[str, Any] = {
        "study": "KLoB RSim over top-k layers (Figure 8 of the comprehensive study)",
        "locator": locator.name, "kind": getattr(locator, "kind", None), "model": model.name,
        "n_layers": n_layers, "similarity": similarity, "k": ks, **curves, "details": details,
        "n": {"facts": len(found.groups), "chains": len(found.chains), "random": len(found.randoms),
              "prompts_located": len(found.rows), "prompts_planned": total},
        "data": data.files, "random_inputs": data.random_inputs, "skipped": found.skipped, "seed": seed,
    }
    if found.randoms and layer_level:
        result["profiles"] = compare_profiles([loc for g in found.groups for loc in g], found.randoms)
    if all(loc.neurons is not None for g in found.groups for loc in g):
        def nsim(a: Location, b: Location) -> float:
            return neuron_similarity(a, b, similarity)

        result["neuron_level"] = {"consistency": consistency(found.groups, nsim, seed=seed).to_dict(),
                                  "relevance": relevance(found.singles, found.chains, nsim).to_dict()}
        if found.randoms:
            result["neuron_level"]["unbiasedness"] = unbiasedness(found.groups, found.randoms, nsim,
                                                                  seed=seed)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["locations"] = found.rows
    return result
