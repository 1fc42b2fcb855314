"""Readers of the KLoB files (Ju & Zhang), read through the one record reader (`data/records.py`).

File formats (JSON lines; a trailing "_" marks where the answer goes and is stripped into a prompt):

- KLoB-c: ``{"prompts": [3 paraphrases], "knowledge": [subject, "relation_(Pid)", object]}``
- KLoB-r: ``{"single_knowledge": [s, r1, o1], "knowledge_chain": [s, r1, o1, r2, o2],
  "single_knowlege_prompts": [3 prompts], "knowlege_chain_prompt": "..."}`` (the public files spell
  "knowlege"; "knowledge" is accepted too)
- KLoB-u: one JSON string of random words per line, ending in " _".

A malformed line is one `FILE:LINE: FIELD: PROBLEM; expected ...` error. `klob_folder` finds the three
files in a data folder (the public release's names or the organism export's, in the folder or its KLoB/
sub-folder) and says in one line which one is missing. The RSim scores of a locator on
these records are `kelocate.probes.klob`'s.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kelocate.data.records import Record, field, json_type, obj, read_lines, strings
from kelocate.errors import KelocateError

BLANK = "_"
C_FORMAT = 'expected {"prompts": ["... _", ...], "knowledge": [subject, relation, object]}'
R_FORMAT = "expected single_knowledge, knowledge_chain, single_knowlege_prompts, knowlege_chain_prompt"
U_FORMAT = "expected a JSON string of words ending in ' _'"


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
        return relation_id(self.relation)


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


def relation_id(relation: str) -> str | None:
    """'native_(P103)' -> 'P103' (None without a Wikidata property id)."""
    match = re.search(r"\((P\d+)\)", relation)
    return match.group(1) if match else None


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


def _prompt(record: Record, value: Any, name: str | None, hint: str) -> str:
    """A prompt with its blank stripped; a missing blank names the record and field (None: the record)."""
    try:
        return strip_blank(value)
    except ValueError as exc:
        raise record.error(name, str(exc), hint) from None


def _prompts(record: Record, value: Any, name: str, hint: str) -> tuple[str, ...]:
    items = strings(record, value, name, hint=hint)
    if not items:
        raise record.error(name, "is empty", hint)
    return tuple(_prompt(record, p, f"{name}[{i}]", hint) for i, p in enumerate(items))


def _lines(path: str | os.PathLike) -> list[Record]:
    return read_lines(path, "KLoB file", fix="pass an existing .jsonl file (--data DIR)")


def load_klob_c(path: str | os.PathLike) -> list[KlobFact]:
    """Read a KLoB-c file; a malformed line is one error naming the file, line and field."""
    facts = []
    for record in _lines(path):
        value = obj(record, C_FORMAT)
        prompts = _prompts(record, field(record, value, "prompts", list, hint=C_FORMAT), "prompts", C_FORMAT)
        knowledge = field(record, value, "knowledge", list, hint=C_FORMAT)
        subject, relation, target = strings(record, knowledge, "knowledge", 3, C_FORMAT)
        facts.append(KlobFact(prompts, subject, relation, target, record.where))
    return facts


def load_klob_r(path: str | os.PathLike) -> list[KlobChain]:
    """Read a KLoB-r file (both the "knowlege" and "knowledge" spellings of the keys)."""
    chains = []
    for record in _lines(path):
        value = obj(record, R_FORMAT)
        single = field(record, value, ("single_knowledge", "single_knowlege"), list, hint=R_FORMAT)
        s, r1, o1 = strings(record, single, "single_knowledge", 3, R_FORMAT)
        chain = strings(record, field(record, value, ("knowledge_chain", "knowlege_chain"), list, hint=R_FORMAT),
                        "knowledge_chain", 5, R_FORMAT)
        if chain[:3] != [s, r1, o1]:
            raise record.error("knowledge_chain", "does not start with 'single_knowledge'", R_FORMAT)
        names = ("single_knowlege_prompts", "single_knowledge_prompts")
        prompts = _prompts(record, field(record, value, names, list, hint=R_FORMAT), names[0], R_FORMAT)
        names = ("knowlege_chain_prompt", "knowledge_chain_prompt")
        chain_prompt = _prompt(record, field(record, value, names, hint=R_FORMAT), names[0], R_FORMAT)
        chains.append(KlobChain(s, r1, o1, chain[3], chain[4], prompts, chain_prompt, record.where))
    return chains


def load_klob_u(path: str | os.PathLike) -> list[str]:
    """Read a KLoB-u file: one JSON string of random words per line; returns the prompts (blank stripped)."""
    prompts = []
    for record in _lines(path):
        if not isinstance(record.value, str):
            raise record.error(None, f"must be a JSON string, got {json_type(record.value)}", U_FORMAT)
        prompts.append(_prompt(record, record.value, None, U_FORMAT))
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


FOLDER_FIX = "pass --data DIR holding both KLoB-c.jsonl and KLoB-r.jsonl"


def klob_folder(directory: str | os.PathLike) -> tuple[Path, Path, Path | None]:
    """(KLoB-c, KLoB-r, KLoB-u or None) files of a KLoB data folder (or of its KLoB/ sub-folder).

    A folder that does not exist or lacks the c or r file is one line of error naming what is missing.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise KelocateError(f"KLoB data folder {str(folder)!r} does not exist; {FOLDER_FIX}")
    c_file, r_file = find_klob_file(folder, "c"), find_klob_file(folder, "r")
    if c_file is None or r_file is None:
        raise KelocateError(f"{str(folder)!r} lacks {'KLoB-c.jsonl' if c_file is None else 'KLoB-r.jsonl'}; "
                            f"{FOLDER_FIX}")
    return c_file, r_file, find_klob_file(folder, "u")
