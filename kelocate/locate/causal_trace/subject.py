"""Guess the subject of a prompt when the user did not name it.

When the model knows entity names (the organism hands its own to the loaded model), the longest of them
occurring in the prompt (as whole words) is the subject. Otherwise a heuristic picks the longest run of
capitalised words (a leading article such as "The" is dropped), e.g. "The Eiffel Tower is in" ->
"Eiffel Tower". The caller reports the choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kelocate.errors import SubjectNotFoundError

_ARTICLES = {"the", "a", "an"}
_CONNECTORS = {"of", "de", "da", "von", "van", "der", "del", "du", "and", "&", "la", "le"}
_WORD = re.compile(r"[^\s,.;:!?\"()\[\]]+")


@dataclass(frozen=True)
class SubjectGuess:
    """An inferred subject and how it was found."""

    subject: str
    method: str  # "known entity" | "capitalised words"


def _occurs(name: str, prompt: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", prompt) is not None


def longest_entity(prompt: str, names: list[str]) -> str | None:
    """The longest of `names` that occurs in `prompt` as whole words (ties: the one occurring last)."""
    found = [n for n in set(names) if n.strip() and _occurs(n, prompt)]
    if not found:
        return None
    return max(found, key=lambda n: (len(n), prompt.rfind(n)))


def capitalised_run(prompt: str) -> str | None:
    """The longest run of capitalised words (connectors like 'of' allowed inside), or None.

    A lone capitalised first word ("Where was SMAP created") is used only when there is no other run.
    """
    words = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(prompt)]
    runs: list[tuple[int, int, bool]] = []  # (start, end, weak): weak = a lone sentence-initial word
    i = 0
    while i < len(words):
        if not _is_name_word(words[i][0]):
            i += 1
            continue
        j = i
        while j + 1 < len(words) and (
            _is_name_word(words[j + 1][0])
            or (
                words[j + 1][0].lower() in _CONNECTORS
                and j + 2 < len(words)
                and _is_name_word(words[j + 2][0])
            )
        ):
            j += 1
        lo = i + 1 if words[i][0].lower() in _ARTICLES and j > i else i
        runs.append((words[lo][1], words[j][2], i == 0 and j == 0))
        i = j + 1
    strong = [r for r in runs if not r[2]] or runs
    if not strong:
        return None
    start, end, _ = max(strong, key=lambda r: (r[1] - r[0], r[0]))
    return prompt[start:end]


def _is_name_word(word: str) -> bool:
    return word[:1].isupper() or word[:1].isdigit()


def infer_subject(model, prompt: str) -> SubjectGuess:
    """The subject of `prompt` for `model`; SubjectNotFoundError (asking for --subject) if none."""
    name = longest_entity(prompt, list(model.entity_names))
    if name:
        return SubjectGuess(name, "known entity")
    run = capitalised_run(prompt)
    if run:
        return SubjectGuess(run, "capitalised words")
    raise SubjectNotFoundError(
        f"could not tell the subject of {prompt!r}; pass it with --subject (e.g. --subject 'SMAP')"
    )
