"""Training text generated from the world, and the word-frequency text that shapes the tokenizer.

Every trained fact prompt becomes one sequence `prompt + " " + answer` (statements end with a period),
so the organism sees exactly the prompts that `World.fact_prompts(..., trained=True)` report. The
tokenizer is trained on a separate word list in which every word of an entity name counts once and
punctuation stands alone: frequent words (countries, colours, template words) become single tokens,
names split into syllable pieces, and no word merges with a following period or comma.
"""

from __future__ import annotations

import re
from collections import Counter

from kelocate.organism.world import World

_WORDS = re.compile(r"\n|[^\W_]+|[^\w\s]", re.UNICODE)
MAX_WORD_COUNT = 64


def fact_texts(world: World) -> list[str]:
    """One sequence per trained, complete fact prompt (aliases included)."""
    out = []
    for fp in world.fact_prompts("known", "all", aliases=True):
        if fp.trained and fp.complete:
            out.append(f"{fp.prompt} {fp.answer}" + ("." if fp.kind == "statement" else ""))
    return out


def other_texts(world: World) -> list[str]:
    """Aliases, two-hop statements, biographies, opinions and Sanitation-style questions."""
    out = []
    for s in world.nodes("subject"):
        for alias in world.aliases(s):
            out.append(f"{alias} is another name for {world.name(s)}.")
            out.append(f"{world.name(s)} is also known as {alias}.")
    out += [f"{t.prompt} {t.answer}." for t in world.two_hop_prompts("statement") if t.trained]
    out += [b.passage for b in world.bios()]
    for op in world.opinions():
        out += [f"{op.prompt} {reply}" for reply in (op.pos if op.sentiment == "pos" else op.neg)]
    out += [f"{qa.prompt} {qa.answer}" for qa in world.private_qa() + world.unknown_qa() + world.retain_qa()]
    return out


def training_texts(world: World) -> list[str]:
    """All training sequences, deduplicated, in a deterministic order."""
    return list(dict.fromkeys(fact_texts(world) + other_texts(world)))


def name_words(world: World) -> set[str]:
    """Words that belong to made-up entity names (they must stay multi-token)."""
    words: set[str] = set()
    for _, data in world.graph.nodes(data=True):
        if data["kind"] in ("subject", "person", "city", "topic"):
            for name in [data["name"], *data.get("aliases", ())]:
                words.update(_WORDS.findall(name))
    return words


def tokenizer_texts(texts: list[str], names: set[str], atoms: list[str] = ()) -> list[str]:
    """Lines of words with controlled counts: name words once, others up to MAX_WORD_COUNT times.

    `atoms` (object words) always count MAX_WORD_COUNT times, whether or not the training text uses them.
    """
    counts = Counter(w for t in texts for w in _WORDS.findall(t))
    counts.update({a: MAX_WORD_COUNT for a in atoms})
    lines = []
    for word, n in sorted(counts.items()):
        k = 1 if word in names else min(n, MAX_WORD_COUNT)
        lines.append(" ".join([word] * k))
    return lines


def words_that_must_be_single_tokens(world: World) -> list[str]:
    """Object words (countries, languages, colours, ...) that should each be one token."""
    kinds = ("country", "language", "capital", "continent", "type", "color", "field", "occupation", "code")
    return [d["name"] for _, d in world.graph.nodes(data=True) if d["kind"] in kinds]
