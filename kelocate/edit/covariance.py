"""The C = E[k k^T] an editor solves with: `stats.second_moments` for all its layers in one pass, kept in
memory per model and settings so that a sequence of edits reads the disk cache once."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from kelocate.edit.stats import MAX_LENGTH, N_GENERATED, second_moments
from kelocate.errors import KelocateError

_MEMO: dict[tuple, tuple[torch.Tensor, str]] = {}
_MEMO_LIMIT = 8  # layers kept in memory (float64 d_mlp^2 each: 1 GB at Llama-2-7B's 11008)


def _corpus_id(corpus) -> str:
    if corpus is None:
        return "default"
    if isinstance(corpus, (str, os.PathLike)):
        return f"file:{os.fspath(corpus)}"
    if hasattr(corpus, "digest"):
        return f"corpus:{corpus.digest}"
    return f"texts:{id(corpus)}:{len(corpus)}"


def covariances(model, layers: Sequence[int], hp: dict[str, Any], corpus=None,
                progress=None) -> dict[int, tuple[torch.Tensor, str]]:
    """{layer: (E[k k^T] float64 [d_mlp, d_mlp], where its text came from)} for `layers`.

    hp keys: mom2_n_samples (texts used at most), mom2_max_length (tokens per text)."""
    n, length = hp.get("mom2_n_samples"), hp.get("mom2_max_length", 128)
    if corpus is None and model.source.get("family") != "organism":
        # text the model generates costs a forward per token: cap it (ROME's 100k texts need --corpus)
        n, length = min(n or N_GENERATED, N_GENERATED), min(length, MAX_LENGTH)
    keys = {layer: (model.fingerprint, layer, _corpus_id(corpus), n, length) for layer in layers}
    missing = [layer for layer, key in keys.items() if key not in _MEMO]
    if missing:
        texts = corpus if isinstance(corpus, (list, tuple)) else None
        source = None if texts is not None else corpus
        found = second_moments(model, missing, texts=texts, corpus=source, n_samples=n, max_length=length,
                               progress=progress)
        if len(_MEMO) + len(found) > _MEMO_LIMIT:
            _MEMO.clear()
        for layer, stat in found.items():
            if stat.count < model.d_mlp:
                raise KelocateError(
                    f"the key statistics of layer {layer} cover {stat.count} tokens, fewer than the {model.d_mlp} "
                    f"MLP neurons, so E[k k^T] is singular; pass a larger corpus (--corpus) or more samples")
            note = f"{stat.source} ({stat.count} tokens{', cached' if stat.cached else ''})"
            _MEMO[keys[layer]] = (stat.mom2.double(), note)
    return {layer: (_MEMO[keys[layer]][0].to(model.device), _MEMO[keys[layer]][1]) for layer in layers}


def covariance(model, layer: int, hp: dict[str, Any], corpus=None) -> tuple[torch.Tensor, str]:
    """E[k k^T] of one layer and where its text came from (see `covariances`)."""
    return covariances(model, [layer], hp, corpus)[layer]
