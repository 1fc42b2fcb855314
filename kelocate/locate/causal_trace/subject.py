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
    """An inferred subject, how it was found, and why it was chosen (said in the trace's notes)."""

    subject: str
    method: str  # "known entity" | "capitalised words"
    reason: str = ""


def _occurs(name: str, prompt: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", prompt) is not None


def longest_entity(prompt: str, names: list[str]) -> str | None:
    """The longest of `names` that occurs in `prompt` as whole words (ties: the one occurring first)."""
    found = [n for n in set(names) if n.strip() and _occurs(n, prompt)]
    if not found:
        return None
    return max(found, key=lambda n: (len(n), -prompt.find(n)))


def capitalised_runs(prompt: str) -> list[tuple[str, bool]]:
    """Runs of capitalised words (connectors like 'of' allowed inside; a leading article dropped), in order,
    each with whether it is weak: a lone sentence-initial word ("Where was SMAP created")."""
    words = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(prompt)]
    runs: list[tuple[str, bool]] = []
    i = 0
    while i < len(words):
        if not _is_name_word(words[i][0]):
            i += 1
            continue
        j = i
        while j + 1 < len(words) and (
            _is_name_word(words[j + 1][0])
            or (words[j + 1][0].lower() in _CONNECTORS and j + 2 < len(words) and _is_name_word(words[j + 2][0]))
        ):
            j += 1
        lo = i + 1 if words[i][0].lower() in _ARTICLES and j > i else i
        runs.append((prompt[words[lo][1]:words[j][2]], i == 0 and j == 0))
        i = j + 1
    return runs


def capitalised_run(prompt: str) -> str | None:
    """The longest strong run of capitalised words (ties: the first), else the longest weak one, or None."""
    runs = capitalised_runs(prompt)
    strong = [r for r, weak in runs if not weak] or [r for r, _ in runs]
    return max(strong, key=len) if strong else None


def _is_name_word(word: str) -> bool:
    return word[:1].isupper() or word[:1].isdigit()


def _ends_prompt(model, prompt: str, subject: str) -> bool:
    """Whether `subject`'s tokens end at the prompt's last token (then restoring it is trivially the clean
    run: nothing follows that could carry the fact, and every cell there gives back the clean answer)."""
    return model.subject_span(prompt, subject)[1] == len(model.encode(prompt))


def infer_subject(model, prompt: str) -> SubjectGuess:
    """The subject of `prompt` for `model`; SubjectNotFoundError (asking for --subject) if none.

    Known entity names first (the organism's world), then the longest run of capitalised words; a candidate
    that ends at the prompt's last token is never chosen ("Apple was founded by Steve" gives Apple, not Steve).
    """
    names = [n for n in model.entity_names if _occurs(n, prompt) and not _ends_prompt(model, prompt, n)]
    name = longest_entity(prompt, names)
    if name:
        return SubjectGuess(name, "known entity", "the longest known entity name in the prompt")
    runs = capitalised_runs(prompt)
    usable = [(r, weak) for r, weak in runs if not _ends_prompt(model, prompt, r)]
    dropped = [r for r, _ in runs if (r, False) not in usable and (r, True) not in usable]
    strong = [r for r, weak in usable if not weak]
    pool = strong or [r for r, _ in usable]
    if pool:
        run = max(pool, key=len)  # ties: the first, i.e. before the relation words
        why = "the longest run of capitalised words" if strong else "the capitalised first word"
        if dropped:
            why += f" ({', '.join(repr(d) for d in dropped)} ends the prompt, so it cannot be the subject)"
        return SubjectGuess(run, "capitalised words", why + "; check it")
    hint = f" ({', '.join(repr(d) for d in dropped)} ends the prompt)" if dropped else ""
    raise SubjectNotFoundError(
        f"could not tell the subject of {prompt!r}{hint}; pass it with --subject (e.g. --subject 'SMAP')"
    )
