"""The overlap of two layer rankings as a curve over k, with the overlap two random rankings have by chance.

KLoB (Ju & Zhang) compares layer-level locations by the similarity of their top-k layers and reports it over
k (the comprehensive study's Figure 8); its RSim = max((Sim_cand - Sim_all) / (1 - Sim_all), 0) subtracts a
baseline Sim_all, the similarity of locations of *unrelated* facts. A single case (one fact, its chain and
one unrelated fact of the same subject, the SMAP case of Figure 9) has no facts of other subjects to take
that from, so `chance_similarity` gives the baseline it tends to when nothing is shared: the expected
similarity of the top-k sets of two independent, uniformly random rankings of the n layers. Its
hypergeometric expectation is exact, so RSim over it is "overlap beyond chance", 0 at k = n (every ranking
shares all n layers) through `klob.rsim`'s guard.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

import numpy as np

from kelocate.errors import KelocateError
from kelocate.locate.location import Location
from kelocate.probes.klob import layer_similarity, rsim

MODES = ("jaccard", "overlap")


def check_mode(mode: str) -> str:
    """`mode` if it is a known similarity ('jaccard' or 'overlap'), else a one-line KelocateError."""
    if mode not in MODES:
        raise KelocateError(f"unknown similarity {mode!r}; use jaccard or overlap")
    return mode


def chance_similarity(n_layers: int, k: int, mode: str = "jaccard") -> float:
    """Expected similarity of the top-k sets of two independent uniformly random rankings of `n_layers`.

    The shared count X of two random k-subsets of n is hypergeometric, P(X = x) = C(k, x) C(n-k, k-x) / C(n, k);
    Jaccard is X / (2k - X), overlap X / k (so its expectation is k / n).
    """
    check_mode(mode)
    if n_layers < 1 or not 1 <= k <= n_layers:
        raise KelocateError(f"top-k of {k} layers out of {n_layers} is undefined; use 1 <= k <= n_layers")
    total = comb(n_layers, k)
    expected = 0.0
    for x in range(max(0, 2 * k - n_layers), k + 1):
        p = comb(k, x) * comb(n_layers - k, k - x) / total
        expected += p * (x / (2 * k - x) if mode == "jaccard" else x / k)
    return expected


def overlap_curve(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, ks: Sequence[int],
                  mode: str = "jaccard") -> list[float]:
    """Similarity of the top-k layers of two per-layer score vectors, for every k in `ks` (ties: lower layer)."""
    check_mode(mode)
    la, lb = Location(layer_scores=np.asarray(a, dtype=float)), Location(layer_scores=np.asarray(b, dtype=float))
    if la.layer_scores.shape != lb.layer_scores.shape:
        raise KelocateError(f"cannot compare layer scores of {la.layer_scores.shape[0]} and "
                            f"{lb.layer_scores.shape[0]} layers; trace both on one model")
    return [layer_similarity(la, lb, int(k), mode) for k in ks]


def rsim_curve(similarities: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """KLoB's RSim at every k: max((Sim_cand - Sim_all) / (1 - Sim_all), 0), 0 where Sim_all -> 1."""
    if len(similarities) != len(baseline):
        raise ValueError("one baseline value per k is needed")
    return [rsim(float(s), float(c)) for s, c in zip(similarities, baseline, strict=True)]
