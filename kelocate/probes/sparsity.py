"""How an edit's weight change dW is spread: per layer, per value column, per row (the comprehensive study's
Figure 6, after De Cao et al.), measured from any `EditRecord` of a weight editor.

dW of a parameter is `after - before` of the record, computed in float64 (the difference of two float32,
bf16 or fp16 numbers is then exact or nearly so; a float32 difference would round it). Conventions, stated in
every result (`SparsityResult.conventions`):

- Axes. Weights are in HF's [out_features, in_features] layout. For `down_proj` [d_model, d_mlp], column j
  (axis 1) is neuron j's value vector, the vector it writes into the residual stream, and row i (axis 0) is
  residual dimension i. For any other matrix, columns are input features and rows output features. A tensor
  that is not a matrix is measured as a matrix [shape[0], rest] (a vector: one column).
- Column mass = energy, the squared L2 norm of the column, ||dW[:, j]||^2. Why not L1 (sum |dW| down the
  column): the residual stream has no privileged basis, and a column's L2 norm does not depend on it while
  its L1 norm does; the energies add up to ||dW||_F^2, so a share is a fraction of one total; they rank
  columns as the projection probe picks its "top five columns of dW" (by norm); and the participation ratio
  of squared amplitudes, 1 / sum p_j^2 with p_j = m_j / sum m, is the usual one. The L1 version is reported
  beside it (`columns_l1`), since the |dW| heatmaps show L1 magnitudes.
- top-5 share: mass of the 5 largest columns / total; top-1% share: mass of the ceil(1% of n) largest columns
  / total (at least one column). Participation ratio: (sum m)^2 / sum m^2, the effective number of columns:
  1 when one column holds everything, n when all n columns hold the same mass. For a rank-one update u v^T
  the column energies are v_j^2 ||u||^2, so the measures are those of v^2 alone: a rank-one update is no
  sparser than its key vector, and touches every column where v_j != 0. Nothing here assumes sparsity.
- Numerical rank: the number of singular values of dW above tol = max(max(m, n) * eps * s_max,
  eps / 2 * ||W'||_F), eps the machine epsilon of the parameter's dtype. The first term is numpy's
  `matrix_rank` default; the second bounds the spectral norm of the rounding of the written weights
  (|fl(W + D) - (W + D)| <= eps/2 |W'| entrywise), below which a singular value of the stored dW cannot be
  told from rounding. The stable rank ||dW||_F^2 / s_max^2 is reported too (continuous, at most the rank).
- An all-zero dW (a parameter the edit left unchanged) has no shares: they are None.

ICE, IKE and SERAC change no weight (their edits are served); measuring such a record is a KelocateError.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from kelocate import display
from kelocate.edit.record import EditRecord
from kelocate.errors import KelocateError
from kelocate.model import weights

TOP_COLUMNS = 5  # the "top five columns of dW" (De Cao et al.; the comprehensive study's Figure 7)
TOP_FRACTION = 0.01  # the "top 1%" of columns
N_SINGULAR = 10  # leading singular values kept in a result

CONVENTIONS = {
    "delta": "dW = after - before of the record, in float64",
    "axes": "HF [out_features, in_features]: for down_proj [d_model, d_mlp], column j (axis 1) = neuron j's "
            "value vector, row i (axis 0) = residual dimension i",
    "column_mass": "energy ||dW[:, j]||_2^2 (basis-free in the residual stream, adds up to ||dW||_F^2); "
                   "columns_l1 uses sum_i |dW[i, j]|",
    "top_share": f"mass of the {TOP_COLUMNS} largest columns, and of the ceil({TOP_FRACTION:.0%} of n) largest "
                 "(at least 1), over the total mass",
    "participation_ratio": "(sum m)^2 / sum m^2 of the column masses: 1 = one column, n = all equal",
    "rank_tolerance": "max(max(m, n) * eps * s_max, eps/2 * ||W_after||_F), eps of the parameter's dtype",
}


# ====================================================================== measures of one mass vector / matrix

def top_share(masses: np.ndarray, k: int) -> float | None:
    """Share of the total mass held by the k largest masses (None for an all-zero vector)."""
    masses = np.asarray(masses, dtype=np.float64)
    total = float(masses.sum())
    if total <= 0.0:
        return None
    k = max(0, min(int(k), masses.size))
    return float(np.sort(masses)[::-1][:k].sum() / total)


def top_fraction_count(n: int, fraction: float = TOP_FRACTION) -> int:
    """How many columns 'the top `fraction`' of n columns is: ceil(fraction * n), at least one."""
    return max(1, math.ceil(fraction * n - 1e-9))


def participation_ratio(masses: np.ndarray) -> float | None:
    """(sum m)^2 / sum m^2: the effective number of non-negative masses (None for an all-zero vector)."""
    masses = np.asarray(masses, dtype=np.float64)
    if masses.size and masses.min() < 0:
        raise KelocateError("participation ratio: masses must be non-negative; pass |x| or x**2")
    squares = float(np.square(masses).sum())
    if squares <= 0.0:
        return None
    return float(masses.sum() ** 2 / squares)


@dataclass(frozen=True)
class Concentration:
    """How concentrated a vector of non-negative masses (one per column, or per row) is."""

    mass: str  # "energy" (squared L2 norm) or "l1" (sum of |dW|)
    n: int  # how many columns (or rows)
    total: float
    top: list[int]  # indices of the TOP_COLUMNS largest, largest first
    top5_share: float | None
    top1pct_count: int
    top1pct_share: float | None
    participation_ratio: float | None

    @classmethod
    def of(cls, masses: np.ndarray, mass: str) -> Concentration:
        masses = np.asarray(masses, dtype=np.float64)
        count = top_fraction_count(masses.size)
        order = np.argsort(-masses, kind="stable")[:TOP_COLUMNS]
        return cls(mass=mass, n=int(masses.size), total=float(masses.sum()),
                   top=[int(i) for i in order if masses[i] > 0],
                   top5_share=top_share(masses, TOP_COLUMNS), top1pct_count=count,
                   top1pct_share=top_share(masses, count), participation_ratio=participation_ratio(masses))


@dataclass(frozen=True)
class Rank:
    """The numerical rank of dW with its tolerance, the leading singular values and the stable rank."""

    rank: int
    tolerance: float
    eps: float
    singular_values: list[float]  # the N_SINGULAR largest
    stable_rank: float | None  # ||dW||_F^2 / s_max^2


def numerical_rank(delta: np.ndarray, eps: float, written_norm: float = 0.0) -> Rank:
    """Singular values of `delta` above max(max(shape) * eps * s_max, eps / 2 * written_norm).

    `written_norm` is ||W_after||_F, the scale of the rounding the stored difference carries (0: none)."""
    delta = np.asarray(delta, dtype=np.float64)
    if delta.size == 0:
        return Rank(0, 0.0, eps, [], None)
    s = np.linalg.svd(delta, compute_uv=False)
    s_max = float(s[0]) if s.size else 0.0
    tol = max(max(delta.shape) * eps * s_max, eps / 2 * written_norm)
    rank = int((s > tol).sum()) if s_max > 0 else 0
    stable = float(np.square(s).sum() / s_max**2) if s_max > 0 else None
    return Rank(rank, float(tol), float(eps), [float(v) for v in s[:N_SINGULAR]], stable)


# ====================================================================== one parameter

def _as_matrix(t: torch.Tensor) -> torch.Tensor:
    """A parameter as a matrix: itself, [n] -> [n, 1], [a, b, ...] -> [a, b * ...]."""
    if t.dim() == 2:
        return t
    return t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(-1, 1)


@dataclass
class ParameterSparsity:
    """How dW of one parameter is spread over its columns and rows, with its size and rank."""

    name: str
    layer: int | None
    shape: list[int]  # as a matrix [rows, columns]
    dtype: str
    changed: int  # entries with dW != 0
    abs_sum: float  # sum |dW|
    frobenius: float  # ||dW||_F
    relative: float | None  # ||dW||_F / ||W_before||_F
    max_abs: float
    columns: Concentration  # by energy
    columns_l1: Concentration
    rows: Concentration  # by energy
    rank: Rank
    column_abs: np.ndarray = field(repr=False)  # sum_i |dW[i, j]|, per column
    column_energy: np.ndarray = field(repr=False)  # ||dW[:, j]||^2
    row_abs: np.ndarray = field(repr=False)  # sum_j |dW[i, j]|, per row
    row_energy: np.ndarray = field(repr=False)

    def to_dict(self, arrays: bool = True) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}
        if arrays:
            out |= {k: getattr(self, k).tolist() for k in ("column_abs", "column_energy", "row_abs", "row_energy")}
        return out


def delta_of(before: torch.Tensor, after: torch.Tensor) -> np.ndarray:
    """after - before as a float64 matrix (see `_as_matrix`)."""
    if before.shape != after.shape:
        raise KelocateError(f"before and after differ in shape ({tuple(before.shape)} vs {tuple(after.shape)}); "
                            "the record is damaged")
    return (_as_matrix(after).double() - _as_matrix(before).double()).cpu().numpy()


def parameter_sparsity(name: str, before: torch.Tensor, after: torch.Tensor) -> ParameterSparsity:
    """Every measure of one parameter's dW = after - before (see the module's conventions)."""
    delta = delta_of(before, after)
    magnitude = np.abs(delta)
    squares = np.square(delta)
    eps = float(torch.finfo(after.dtype).eps) if after.dtype.is_floating_point else 0.0
    written = float(torch.linalg.vector_norm(after.double()))
    base = float(torch.linalg.vector_norm(before.double()))
    column_energy, row_energy = squares.sum(axis=0), squares.sum(axis=1)
    frob = float(math.sqrt(squares.sum()))
    return ParameterSparsity(
        name=name, layer=weights.layer_of(name), shape=list(delta.shape), dtype=str(after.dtype).removeprefix("torch."),
        changed=int(np.count_nonzero(delta)), abs_sum=float(magnitude.sum()), frobenius=frob,
        relative=frob / base if base > 0 else None, max_abs=float(magnitude.max(initial=0.0)),
        columns=Concentration.of(column_energy, "energy"), columns_l1=Concentration.of(magnitude.sum(axis=0), "l1"),
        rows=Concentration.of(row_energy, "energy"), rank=numerical_rank(delta, eps, written),
        column_abs=magnitude.sum(axis=0), column_energy=column_energy, row_abs=magnitude.sum(axis=1),
        row_energy=row_energy)


# ====================================================================== a whole record

@dataclass(frozen=True)
class LayerMass:
    """dW summed over the edited parameters of one block (layer None: parameters outside the blocks)."""

    layer: int | None
    parameters: list[str]
    abs_sum: float  # sum |dW|
    frobenius: float  # sqrt(sum dW^2)
    relative: float | None  # frobenius / ||W_before||_F over the same parameters


@dataclass
class SparsityResult:
    """The sparsity of one edit: per parameter, and |dW| per layer. `to_dict`/`to_json` serialise it."""

    method: str
    fingerprint: str
    requests: list[dict]
    parameters: list[ParameterSparsity]
    layers: list[LayerMass]
    conventions: dict[str, str] = field(default_factory=lambda: dict(CONVENTIONS))

    def _repr_html_(self) -> str | None:
        """Shown inline in Jupyter: a figure and the key numbers (`kelocate.notebook`)."""
        return display.html("sparsity", self)

    def parameter(self, name: str | None = None) -> ParameterSparsity:
        """One parameter's measures: `name`, or the one with the largest ||dW||_F."""
        if name is None:
            return max(self.parameters, key=lambda p: p.frobenius)
        for p in self.parameters:
            if p.name == name:
                return p
        raise KelocateError(f"this {self.method} edit did not change {name!r}; it changed "
                            f"{', '.join(p.name for p in self.parameters)}")

    def to_dict(self, arrays: bool = True) -> dict[str, Any]:
        return {"method": self.method, "fingerprint": self.fingerprint, "requests": self.requests,
                "conventions": self.conventions, "layers": [asdict(m) for m in self.layers],
                "parameters": [p.to_dict(arrays) for p in self.parameters]}

    def to_json(self, arrays: bool = True) -> str:
        return json.dumps(self.to_dict(arrays))


def check_weight_edit(record: EditRecord) -> None:
    """A record with no weight change (ICE, IKE, SERAC: served answers) cannot be measured: one line."""
    if not record.before:
        served = " (it is served: the model's weights are untouched)" if record.serving is not None else ""
        raise KelocateError(f"this {record.method} edit changes no weights{served}, so it has no dW to measure; "
                            "measure the record of a weight editor (rome, memit, pmet, alphaedit, kn, ft-l, ft-m, "
                            "mend, adalora)")


def sparsity(record: EditRecord) -> SparsityResult:
    """Every sparsity measure of `record`'s weight change, per parameter and per layer.

    Works on every weight editor's record: ROME, MEMIT, PMET, AlphaEdit, KN, FT-L, FT-M and MEND write
    `down_proj` weights; AdaLoRA's record holds the merged base weights, so its dW is the merged adapter."""
    check_weight_edit(record)
    params = [parameter_sparsity(n, record.before[n], record.after[n]) for n in record.names]
    return SparsityResult(method=record.method, fingerprint=record.fingerprint, requests=list(record.requests),
                          parameters=params, layers=layer_masses(record, params))


def layer_masses(record: EditRecord, params: Sequence[ParameterSparsity]) -> list[LayerMass]:
    """|dW| summed per block, in block order (parameters outside the blocks last)."""
    groups: dict[int | None, list[ParameterSparsity]] = {}
    for p in params:
        groups.setdefault(p.layer, []).append(p)
    out = []
    for layer in sorted(groups, key=lambda n: (n is None, n or 0)):
        group = groups[layer]
        base = math.sqrt(sum(float(torch.square(record.before[p.name].double()).sum()) for p in group))
        frob = math.sqrt(sum(p.frobenius ** 2 for p in group))
        out.append(LayerMass(layer, [p.name for p in group], sum(p.abs_sum for p in group), frob,
                             frob / base if base > 0 else None))
    return out


# ====================================================================== over many edits

MEASURES = ("top-5 share", "top-1% share", "participation ratio", "rank")


def concentration_values(results: Iterable[SparsityResult]) -> dict[str, list[float]]:
    """The concentration measures of many edits, pooled per edited matrix (a MEMIT edit of 3 layers gives 3
    values of each), the parameters with an all-zero dW left out: input to `plots.sparsity`'s bar chart."""
    out: dict[str, list[float]] = {m: [] for m in MEASURES}
    for result in results:
        for p in result.parameters:
            if p.columns.participation_ratio is None:
                continue
            out["top-5 share"].append(p.columns.top5_share)
            out["top-1% share"].append(p.columns.top1pct_share)
            out["participation ratio"].append(p.columns.participation_ratio)
            out["rank"].append(float(p.rank.rank))
    return out


def abs_delta(record: EditRecord, name: str | None = None) -> tuple[str, np.ndarray]:
    """|dW| of one parameter of `record` (default: the one with the largest ||dW||_F), for a heatmap."""
    check_weight_edit(record)
    if name is None:
        name = max(record.names, key=lambda n: float(torch.square(record.delta(n).double()).sum()))
    elif name not in record.before:
        raise KelocateError(f"this {record.method} edit did not change {name!r}; it changed {', '.join(record.names)}")
    return name, np.abs(delta_of(record.before[name], record.after[name]))


def mean_measures(values: Mapping[str, Sequence[float]]) -> dict[str, float | None]:
    """The mean of each measure of `concentration_values` (None where there is no value)."""
    return {m: (float(np.mean(v)) if len(v) else None) for m, v in values.items()}
