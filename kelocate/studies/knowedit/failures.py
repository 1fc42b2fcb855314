"""What the model said to an edit prompt (the paper's Table 7) and the kind of each reply (its Figure 5).

Every study unit run with generation keeps, per edited case, `replies`: the prompt, the greedy reply of the
unedited model (`before`) and of the edited one (`after`), both as long as the `edit_gen` metric decodes
(the target's length + 3 tokens), the target and the old answer's aliases (`old`). `classify` gives the kind
of a reply (the rule is its docstring); `failures_markdown` counts the kinds of the edited replies per
method x task and shows a few failed ones, for `kelocate study report`'s failures.md.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from collections.abc import Sequence

from kelocate.studies.knowedit.metrics import says

TARGET, OLD, PART, IRRELEVANT, NOT_SENTENCE = "target said", "old answer kept", "part of the target", \
    "irrelevant", "not a sentence"
KINDS = (TARGET, OLD, PART, IRRELEVANT, NOT_SENTENCE)
EXAMPLES = 3  # failed replies shown per method x task

# Words that do not make a reply "part of the target" on their own.
STOP_WORDS = frozenset(("a", "an", "the", "of", "in", "on", "at", "to", "for", "and", "or", "is", "was", "by",
                        "with", "from", "as", "it", "its", "be", "that", "this", "he", "she", "they", "i"))


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def not_a_sentence(reply: str) -> bool:
    """A reply is not a sentence when it has no word (letters or digits), when fewer than half of its
    whitespace-separated tokens hold a letter or digit, or when it repeats itself: of 4 or more words, one
    word is more than half of them, or there are at most a third as many distinct words as words."""
    words = _words(reply)
    if not words:
        return True
    tokens = reply.split()
    if sum(bool(re.search(r"\w", t)) for t in tokens) * 2 < len(tokens):
        return True
    if len(words) >= 4:
        top = Counter(words).most_common(1)[0][1]
        if top * 2 > len(words) or len(set(words)) * 3 <= len(words):
            return True
    return False


def classify(reply: str, target: str, old: Sequence[str] = (), prompt: str = "") -> str:
    """The kind of an edited model's reply, the first rule that holds:

    1. "target said": the target occurs in the reply as whole words (the `edit_gen` metric's `says`), so
       this kind is exactly the metric's success;
    2. "old answer kept": an alias of the old answer occurs as whole words (`says`);
    3. "part of the target": some of the target's words, other than stop words (`STOP_WORDS`) and words
       of the prompt (a reply naming the subject ConvSent's target names is no part of it), occur in the
       reply as whole words, case-insensitive, though the target as a whole does not;
    4. "not a sentence": `not_a_sentence` (no word, mostly non-word tokens, or repetition);
    5. "irrelevant": anything else.
    """
    if says(reply, [target]):
        return TARGET
    if says(reply, [a for a in old if a]):
        return OLD
    content = set(_words(target)) - STOP_WORDS - set(_words(prompt))
    if content & set(_words(reply)):
        return PART
    if not_a_sentence(reply):
        return NOT_SENTENCE
    return IRRELEVANT


def _one_line(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def failures_markdown(rows: Sequence[dict]) -> str:
    """failures.md (empty when no row kept its replies: results written before replies were kept): the kinds
    of the edited replies per method x task (with the unedited replies' kinds beside them), then up to
    `EXAMPLES` failed replies of each, and the rule."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row.get("status") == "ok" and row.get("replies"):
            tasks = row.get("case_tasks") or [row["task"]] * len(row["replies"])  # mode `mixed`: by case
            for task, reply in zip(tasks, row["replies"], strict=True):
                groups.setdefault((row["method"], task), []).append(reply)
    if not groups:
        return ""
    head = ["method", "task", "replies", *KINDS, "target said before the edit"]
    lines = ["# Edit failures: what the edited model said", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    examples: list[str] = []
    for (method, task), replies in groups.items():
        kinds = [classify(r["after"], r["target"], r.get("old") or (), r.get("prompt", "")) for r in replies]
        counts = Counter(kinds)
        before = sum(says(r["before"], [r["target"]]) for r in replies if r.get("before") is not None)
        lines.append(f"| {method} | {task} | {len(replies)} | " + " | ".join(str(counts[k]) for k in KINDS)
                     + f" | {before} |")
        failed = [(r, k) for r, k in zip(replies, kinds, strict=True) if k != TARGET][:EXAMPLES]
        if failed:
            examples += ["", f"## {method}, {task}", ""]
            for r, kind in failed:
                old = ", ".join(_one_line(a) for a in r.get("old") or ()) or "-"
                examples += [f"- *{kind}*: prompt \"{_one_line(r['prompt'])}\"; target \"{_one_line(r['target'])}\";"
                             f" old answer \"{old}\"",
                             f"  - before: \"{_one_line(r['before'])}\"" if r.get("before") is not None else
                             "  - before: -",
                             f"  - after: \"{_one_line(r['after'])}\""]
    rule = inspect.cleandoc(classify.__doc__ or "").split("\n", 1)[1].strip()
    return "\n".join([*lines, "", "Example failed replies (greedy, as long as `edit_gen` decodes):", *examples,
                      "", "## The rule", "", "The kind of a reply is the first that holds:", "", rule, "",
                      "Not a sentence: " + " ".join((not_a_sentence.__doc__ or "").split())]) + "\n"
