"""Tokenization every method shares: encoding, subject spans, answer ids, padded batches, readable labels.

Encoding follows what the tokenizer does by default: a Llama-2 or organism tokenizer puts BOS in front
of a text, SmolLM2's puts nothing (forcing its `bos_token`, `<|im_start|>`, in front of plain text drops
p(Paris | "The Eiffel Tower is located in the city of") from 0.70 to 0.30). Special tokens a tokenizer
appends after the text (an EOS) are dropped: a prompt is continued, never ended. `prefix_tokens` tells
what the default encoding puts in front, so results can record it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kelocate.errors import KelocateError, SubjectNotFoundError

SPACE_MARK = "\u2423"  # '␣': a visible leading space in tables and figures
# The token positions an edit reads and writes, and a locator reports: the subject's last token or the
# prompt's last token. The one list of them: editors (edit/keys.py) and locators (locate/locators.py) check
# names against it.
EDIT_TOKENS = ("last_subject", "last")
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


@dataclass(frozen=True)
class Encoded:
    """Token ids (1-D) of a text with each token's character span in that text (special tokens get (0, 0))."""

    ids: torch.Tensor
    offsets: list[tuple[int, int]]
    text: str

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def encode(tokenizer, text: str, special: bool = True) -> Encoded:
    """Tokenize `text` the tokenizer's default way (`special=False`: the text's own tokens only).

    Special tokens the default adds after the text are dropped; those in front (a BOS) are kept.
    """
    enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    ids = [int(i) for i in enc["input_ids"]]
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    if special:
        plain = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        added = set(tokenizer.all_special_ids)
        front = 0
        while front < len(ids) and ids[front] in added and offsets[front] == (0, 0):
            front += 1
        ids, offsets = ids[: front + plain], offsets[: front + plain]
    return Encoded(torch.tensor(ids, dtype=torch.long), offsets, text)


def prefix_tokens(tokenizer) -> list[str]:
    """The special tokens the default encoding puts in front of a text (e.g. ['<s>'], or [] for SmolLM2)."""
    ids = encode(tokenizer, "a").ids.tolist()
    plain = len(tokenizer("a", add_special_tokens=False)["input_ids"])
    return tokenizer.convert_ids_to_tokens(ids[: len(ids) - plain])


def subject_span(tokenizer, prompt: str, subject: str, special: bool = True) -> tuple[int, int]:
    """Token range [start, end) covering the last occurrence of `subject` in `prompt`.

    Found from character offsets: every token overlapping the subject's characters is in the span, so a
    leading-space piece ('▁Japan', 'ĠJapan') whose offsets include the space still counts.
    """
    if not subject or not subject.strip():
        raise SubjectNotFoundError("the subject is empty; pass the subject's text (e.g. --subject SMAP)")
    char_start = prompt.rfind(subject)
    if char_start < 0:
        raise SubjectNotFoundError(
            f"subject {subject!r} does not occur in the prompt {prompt!r}; pass a subject that is part of "
            "the prompt (--subject)")
    char_start += len(subject) - len(subject.lstrip())  # surrounding whitespace is not the subject
    char_end = char_start + len(subject.strip())
    enc = encode(tokenizer, prompt, special)
    hits = [i for i, (a, b) in enumerate(enc.offsets) if b > a and a < char_end and b > char_start]
    if not hits:
        raise SubjectNotFoundError(f"subject {subject!r} covers no token of the prompt {prompt!r}")
    return hits[0], hits[-1] + 1


def answer_ids(tokenizer, prompt: str, answer: str) -> list[int]:
    """Token ids of `answer` as it continues `prompt` (a separating space is added when none is there).

    The answer is tokenized in context (prompt + answer) and cut at the prompt's end, so a tokenizer that
    merges across the boundary differently than alone still gives the ids the model would see.
    """
    if not answer or not answer.strip():
        raise KelocateError("the answer is empty; pass the answer's text (e.g. --answer Japan)")
    sep = "" if prompt.endswith(" ") or answer.startswith(" ") else " "
    full = encode(tokenizer, prompt + sep + answer, special=False)
    cut = len(prompt)
    ids = [int(t) for t, (_, b) in zip(full.ids.tolist(), full.offsets, strict=True) if b > cut]
    prompt_ids = encode(tokenizer, prompt, special=False).ids.tolist()
    if full.ids.tolist()[: len(prompt_ids)] != prompt_ids or not ids:
        ids = encode(tokenizer, sep + answer, special=False).ids.tolist()
    return ids


def pad_batch(rows: Sequence[Sequence[int] | torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned, right-padded ids [batch, width] and attention mask; right padding leaves every real
    token's computation in a causal model unchanged (padding comes after it)."""
    seqs = [torch.as_tensor(r, dtype=torch.long) for r in rows]
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def pad_id(tokenizer) -> int:
    """The id used for padding: the tokenizer's pad token, else its EOS, else 0 (masked out either way)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


# ---------------------------------------------------------------------- readable labels
@functools.cache
def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins for the 256 byte values, inverted (char -> byte).

    Printable Latin-1 bytes stand for themselves; every other byte b is shown as chr(256 + n), n counting
    those bytes in order. This is the table byte-level tokenizers (GPT-2, SmolLM2) write their pieces in.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in table.items()}


def _is_byte_level(tokenizer) -> bool:
    """Whether the tokenizer writes its pieces in byte-level BPE's stand-in characters."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in repr(backend.decoder)


def _piece_text(piece: str, byte_level: bool) -> str | None:
    """The text of one raw vocabulary piece ('ĠTower' -> ' Tower', '▁Japan' -> ' Japan'), None if unknown."""
    if byte_level:
        table = _byte_decoder()
        if piece and all(c in table for c in piece):
            return bytes(table[c] for c in piece).decode("utf-8", errors="backslashreplace")
        return None
    return piece.replace("\u2581", " ")


def token_label(tokenizer, token_id: int) -> str:
    """One token as a reader should see it: '␣Tower' for ' Tower', '\\n' for a newline, '<s>' for BOS,
    and escaped bytes ('\\xf0\\x9f') for a piece of a multi-byte character."""
    token_id = int(token_id)
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if token_id in set(tokenizer.all_special_ids):
        return str(piece)
    text = _piece_text(str(piece), _is_byte_level(tokenizer)) if piece is not None else None
    if text is None or "\ufffd" in text:
        text = tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if text.startswith(" "):
        text = SPACE_MARK + text[1:]
    return "".join(_ESCAPES.get(c, c) for c in text)


def token_labels(tokenizer, ids: Sequence[int] | torch.Tensor) -> list[str]:
    """Readable labels of a sequence of token ids (see `token_label`)."""
    values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    return [token_label(tokenizer, i) for i in values]
