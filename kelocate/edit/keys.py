"""Context prefixes and MLP keys: what ROME, MEMIT, PMET and AlphaEdit read at the subject's last token.

ROME averages the key (the input of `down_proj`, site `mlp_post`) over the prompt preceded by a few short
texts the model generated itself, so that the edit does not hinge on the prompt starting the text.
Prefixes are sampled (top-k, seeded, `kelocate.model.sampling`) once per model and settings and reused;
`templates_for` reads an editor's settings for them.

Token vocabulary: the token an editor reads and writes is named as causal tracing names its rows, so that
a located layer and an edit speak of the same place: 'last_subject' (the subject's last token, ROME's
choice) or 'last' (the prompt's last token); `edit_token` checks a name (an older spelling in a user's
config file is read by `kelocate.edit.config`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kelocate.errors import KelocateError
from kelocate.model import tokens
from kelocate.model.sampling import sample
from kelocate.model.sites import read, site
from kelocate.timing import timed

_PREFIX_CACHE: dict[tuple, list[str]] = {}


def _sample(model, start: str, n: int, length: int, top_k: int, generator: torch.Generator) -> list[str]:
    """n seeded top-k samples of `length` new tokens after `start` (the start included in the text)."""
    ids = model.encode(start).ids.to(model.device)[None].repeat(n, 1)
    first = ids.shape[1] - len(model.encode(start, special=False).ids)
    ids = sample(model, ids, length, top_k=top_k, generator=generator)
    return [model.tokenizer.decode(row[first:].tolist(), skip_special_tokens=True) for row in ids]


def context_templates(model, lengths: Sequence[Sequence[int]], starts: Sequence[str], top_k: int = 5,
                      seed: int = 0) -> list[str]:
    """'{}' plus, for each (length, count) in `lengths`, `count` generated prefixes of `length` tokens,
    each as '<prefix>. {}'. Braces in generated text are replaced so that `format` stays safe."""
    key = (model.fingerprint, tuple(map(tuple, lengths)), tuple(starts), top_k, seed)
    if key not in _PREFIX_CACHE:
        generator = torch.Generator().manual_seed(seed)
        out = ["{}"]
        for length, count in lengths:
            per_start = [count // len(starts) + (i < count % len(starts)) for i in range(len(starts))]
            for start, n in zip(starts, per_start, strict=True):
                if n:
                    texts = _sample(model, start, n, int(length), top_k, generator)
                    out += [" ".join(t.replace("{", " ").replace("}", " ").split()) + ". {}" for t in texts]
        _PREFIX_CACHE[key] = out
    return list(_PREFIX_CACHE[key])


@timed("templates")
def templates_for(model, hp: dict[str, Any]) -> list[str]:
    """The context templates of an editor's settings ('{}' first): `context_lengths`, `context_starts` and
    `seed` (ROME, MEMIT, PMET, AlphaEdit)."""
    return context_templates(model, hp["context_lengths"], hp["context_starts"], seed=hp.get("seed", 0))


@dataclass(frozen=True)
class Row:
    """One input of an edit computation: token ids and the position read or written (the subject's last
    token), plus the target ids it is scored on (empty for rows that are not scored on the target)."""

    ids: list[int]
    position: int
    target_start: int = -1  # index in `ids` of the position whose logits predict the first target token
    target: tuple[int, ...] = ()


TOKENS = tokens.EDIT_TOKENS  # the edit positions (model/tokens.py)


def edit_token(token: str) -> str:
    """`token` when it names an edit position (`TOKENS`); one line of error otherwise."""
    if token not in TOKENS:
        raise KelocateError(f"unknown edit token {token!r}; use one of {', '.join(TOKENS)}")
    return token


def subject_row(model, text: str, subject: str, target: Sequence[int] = (), token: str = "last_subject") -> Row:
    """`text` (which ends with the prompt containing `subject`) followed by all but the last target token;
    the position read or written is the subject's last token ('last_subject', ROME's choice) or the
    prompt's last token ('last')."""
    ids = model.encode(text).ids.tolist()
    if edit_token(token) == "last":
        position = len(ids) - 1
    else:
        position = model.subject_span(text, subject)[1] - 1
    return Row(ids + list(target)[:-1], position, len(ids) - 1 if target else -1, tuple(target))


def batch(model, rows: Sequence[Row]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask of rows, on the model's device."""
    ids, mask = tokens.pad_batch([r.ids for r in rows], model.pad_id)
    return ids.to(model.device), mask.to(model.device)


@torch.no_grad()
@timed("keys")
def read_at(model, rows: Sequence[Row], kind: str, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Activations of site `kind` at each row's position, per layer: {layer: [len(rows), width]} (float32)."""
    ids, mask = batch(model, rows)
    names = [site(kind, layer) for layer in layers]
    _, cache = read(model, ids, mask, names, stop=True)  # nothing above the deepest site is needed
    index = torch.arange(len(rows), device=ids.device)
    positions = torch.tensor([r.position for r in rows], device=ids.device)
    return {layer: cache[name][index, positions].float() for layer, name in zip(layers, names, strict=True)}


@timed("keys")
def mean_keys(model, prompt_subjects: Sequence[tuple[str, str]], templates: Sequence[str],
              layers: Sequence[int], grouped: bool = False, token: str = "last_subject") -> dict[int, torch.Tensor]:
    """ROME/MEMIT keys: per (prompt, subject), the `mlp_post` activation at the subject's last token,
    averaged over the context templates; {layer: [d_mlp, n_requests]}.

    grouped=False averages every template alike (ROME); grouped=True averages the bare prompt ('{}', the
    first template) with the mean of the prefixed ones, half and half (MEMIT)."""
    rows = [subject_row(model, t.format(p), s, token=token) for p, s in prompt_subjects for t in templates]
    acts = read_at(model, rows, "mlp_post", layers)
    n = len(prompt_subjects)
    out = {}
    for layer, a in acts.items():
        a = a.view(n, len(templates), -1)
        mean = (a[:, 0] + a[:, 1:].mean(dim=1)) / 2 if grouped and len(templates) > 1 else a.mean(dim=1)
        out[layer] = mean.T.contiguous()
    return out
