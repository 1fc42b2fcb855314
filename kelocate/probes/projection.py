"""Embedding-space projection (Dar et al.; the comprehensive study's Figure 7): what an MLP value vector, and
what an edit of a value matrix, says in the vocabulary.

A value vector is neuron i's column of layer l's `down_proj` weight W [d_model, d_mlp]: the vector the
neuron adds to the residual stream, scaled by its activation. Projecting it through the unembedding W_U
[vocab, d_model] gives one logit per token, W_U @ W[:, i].

Choices, stated in every result (`choices`):

- raw projection by default, as Dar et al.: no final norm. `final_norm=True` applies the model's final
  RMSNorm first (its weight `model.norm.weight` and `config.rms_norm_eps`), as the residual stream is read at
  the last layer; for a single vector that scales it by a positive number and weights each dimension, so it
  can reorder tokens.
- the sign as stored: a neuron whose activation is negative writes -v; that reading is not shown.
- an edit is projected per edited `down_proj` layer; the headline layer (`EditProjection.layer`) is the one
  whose dW has the largest Frobenius norm (the only one for one-layer editors).
- columns: the five columns of dW = W' - W with the largest L2 norm (only columns that changed); W and W'
  are read from the record (its `before` and `after`), so the model itself may be edited or not.
- the target is the first token of the new target as the model tokenizes it after the prompt
  (`model.answer_ids(prompt, target_new)[0]`), per request of the record.
- Hit@k of a column: the target is among the column's k highest logits (rank < k; ties count in the
  target's favour). "any" is 1 when any of the columns hits, "mean" the share of columns that hit.
- controls the paper lacks: five random columns of the same layer, drawn outside the top five from a seed
  made of `seed`, the layer and the record's requests (so each edit draws its own columns, reproducibly; one
  draw shared by every edit would make the control a single sample of columns),
  projected from W and W' alike; and the base rate over every column of the layer (the share of columns
  whose projection has the target in its top k, in W and in W'), with the chance that at least one of
  five columns drawn at random hits (`any_of`). The paper picks its columns by dW, so their "before" score
  is already conditioned on the edit; the controls say what an unconditioned column scores.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from kelocate import display
from kelocate.edit.record import EditRecord
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError
from kelocate.model import weights

KS = (1, 10, 50)
N_COLUMNS = 5
FINAL_NORM = "model.norm.weight"
CHUNK = 512  # columns projected at once for the base rate (memory: vocab x CHUNK floats)

RAW_CHOICE = "raw projection through the unembedding (no final norm), as Dar et al."
NORM_CHOICE = "final RMSNorm (model.norm.weight, config.rms_norm_eps) applied before the unembedding"
SIGN_CHOICE = "value vectors with the sign as stored (a negative activation would write -v; not shown)"


# ====================================================================== value vectors
@dataclass
class TokenLogit:
    """One token of a projection: its id, readable label and logit."""

    id: int
    token: str
    logit: float


@dataclass
class ValueProjection:
    """The top tokens of one value vector (layer `layer`'s `down_proj` column `neuron`)."""

    model: str
    layer: int
    neuron: int
    final_norm: bool
    norm: float  # L2 norm of the value vector
    top: list[TokenLogit]
    choices: list[str] = field(default_factory=list)

    def _repr_html_(self) -> str | None:
        """Shown inline in Jupyter: a figure and the key numbers (`kelocate.notebook`)."""
        return display.html("value_projection", self)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "layer": self.layer, "neuron": self.neuron, "final_norm": self.final_norm,
                "norm": self.norm, "top": [vars(t) for t in self.top], "choices": self.choices}


def unembed(model, vectors: torch.Tensor, final_norm: bool = False) -> torch.Tensor:
    """Logits [n, vocab] of residual-stream vectors [n, d_model], in float32 on the model's device.

    Raw: W_U @ v. With `final_norm`: W_U @ RMSNorm(v), the model's final norm (weight and eps) first."""
    w_u = weights.unembedding(model).detach()
    v = vectors.detach().to(w_u.device, torch.float32)
    if final_norm:
        gain = weights.parameter(model, FINAL_NORM).detach().float()
        eps = float(model.hf.config.rms_norm_eps)
        v = v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps) * gain
    return v @ w_u.float().T


def check_neuron(model, neuron: int) -> int:
    """`neuron` when layer MLPs have it, else one line naming the range."""
    if not 0 <= int(neuron) < model.d_mlp:
        raise KelocateError(f"neuron {neuron} does not exist: each MLP has neurons 0..{model.d_mlp - 1}")
    return int(neuron)


def check_top_k(model, top_k: int) -> int:
    vocab = weights.unembedding(model).shape[0]
    if not 1 <= int(top_k) <= vocab:
        raise KelocateError(f"top-k {top_k} is out of range; pass 1..{vocab} (the vocabulary size)")
    return int(top_k)


def _top(model, logits: torch.Tensor, k: int) -> list[TokenLogit]:
    values, ids = logits.topk(k)
    labels = model.labels(ids.cpu())
    rows = zip(ids.tolist(), labels, values.tolist(), strict=True)
    return [TokenLogit(int(i), label, float(v)) for i, label, v in rows]


@torch.no_grad()
def project_value(model, layer: int, neuron: int, top_k: int = 10, final_norm: bool = False) -> ValueProjection:
    """The `top_k` tokens of neuron `neuron`'s value vector in layer `layer` (see the module's choices)."""
    layer = model.check_layer(layer)
    neuron, top_k = check_neuron(model, neuron), check_top_k(model, top_k)
    column = weights.mlp_out(model, layer).detach()[:, neuron]
    logits = unembed(model, column[None], final_norm)[0]
    return ValueProjection(model.name, layer, neuron, final_norm, float(column.float().norm()),
                           _top(model, logits, top_k), [NORM_CHOICE if final_norm else RAW_CHOICE, SIGN_CHOICE])


# ====================================================================== edits
@dataclass
class ColumnHits:
    """Where a target token ranks in the projections of some columns (rank 0 = top token)."""

    columns: list[int]
    ranks: list[int]
    ks: tuple[int, ...] = KS

    def any(self, k: int) -> float:
        """1.0 when at least one column has the target in its top k."""
        return float(any(r < k for r in self.ranks))

    def mean(self, k: int) -> float:
        """Share of the columns that have the target in their top k."""
        return sum(r < k for r in self.ranks) / len(self.ranks) if self.ranks else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "ranks": self.ranks, "any": {str(k): self.any(k) for k in self.ks},
                "mean": {str(k): self.mean(k) for k in self.ks}}


@dataclass
class BaseRate:
    """Over every column of a layer: how many have the target in their top k."""

    n_columns: int
    hits: dict[int, int]
    drawn: int = N_COLUMNS

    def rate(self, k: int) -> float:
        """Share of the layer's columns with the target in their top k (the chance level of `mean`)."""
        return self.hits[k] / self.n_columns

    def any_of(self, k: int) -> float:
        """Chance that at least one of `drawn` columns drawn at random hits (the chance level of `any`)."""
        n, h, m = self.n_columns, self.hits[k], min(self.drawn, self.n_columns)
        return 1.0 - math.comb(n - h, m) / math.comb(n, m)

    def to_json(self) -> dict[str, Any]:
        return {"n_columns": self.n_columns, "hits": {str(k): v for k, v in self.hits.items()},
                "rate": {str(k): self.rate(k) for k in self.hits},
                "any_of": {str(k): self.any_of(k) for k in self.hits}, "drawn": self.drawn}


@dataclass
class TargetHits:
    """One request's target in one edited layer: top-dW columns and random columns, before (W) and after (W'),
    the dW columns themselves, and the layer's base rates."""

    target: str
    token_id: int
    token: str
    top: dict[str, ColumnHits]  # "before", "after", "delta"
    random: dict[str, ColumnHits]  # "before", "after"
    base: dict[str, BaseRate]  # "before", "after"

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "token_id": self.token_id, "token": self.token,
                "top": {w: h.to_json() for w, h in self.top.items()},
                "random": {w: h.to_json() for w, h in self.random.items()},
                "base": {w: b.to_json() for w, b in self.base.items()}}


@dataclass
class LayerProjection:
    """One edited `down_proj` layer: its dW, the top columns and what they say before and after."""

    layer: int
    parameter: str
    delta_norm: float  # Frobenius norm of dW
    columns: list[int]  # the top columns of dW by L2 norm
    column_norms: list[float]
    column_share: float  # share of dW's squared norm in those columns
    tokens: dict[str, list[list[str]]]  # "before" / "after": per top column, its top tokens' labels
    targets: list[TargetHits]

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "parameter": self.parameter, "delta_norm": self.delta_norm,
                "columns": self.columns, "column_norms": self.column_norms, "column_share": self.column_share,
                "tokens": self.tokens, "targets": [t.to_json() for t in self.targets]}


@dataclass
class EditProjection:
    """An edit projected into the vocabulary: every edited `down_proj` layer, the headline one first in `layer`."""

    method: str
    model: str
    final_norm: bool
    n_columns: int
    seed: int
    ks: tuple[int, ...]
    layer: int  # the headline layer: the largest ||dW||_F
    layers: list[LayerProjection]
    choices: list[str]

    def _repr_html_(self) -> str | None:
        """Shown inline in Jupyter: a figure and the key numbers (`kelocate.notebook`)."""
        return display.html("edit_projection", self)

    @property
    def headline(self) -> LayerProjection:
        return next(p for p in self.layers if p.layer == self.layer)

    def hit(self, which: str, when: str, how: str, k: int) -> float:
        """A headline number, averaged over the record's targets: which = "top" / "random", when = "before" /
        "after" (/ "delta" for top), how = "any" / "mean"; or which = "base" with how = "rate" / "any_of"."""
        targets = self.headline.targets
        if which == "base":
            values = [getattr(t.base[when], how)(k) for t in targets]
        else:
            values = [getattr(getattr(t, which)[when], how)(k) for t in targets]
        return sum(values) / len(values)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "model": self.model, "final_norm": self.final_norm,
                "n_columns": self.n_columns, "seed": self.seed, "ks": list(self.ks), "layer": self.layer,
                "layers": [p.to_json() for p in self.layers], "choices": self.choices}


def _edited_value_layers(record: EditRecord) -> dict[int, str]:
    """Layer -> HF name of every `down_proj` weight the record changed (in layer order); one line otherwise."""
    found = {}
    for name in record.names:
        layer = weights.layer_of(name)
        if layer is not None and name == weights.mlp_out_name(layer) and not torch.equal(record.before[name],
                                                                                          record.after[name]):
            found[layer] = name
    if not found:
        changed = ", ".join(record.names) or "no weights"
        raise KelocateError(f"this {record.method} edit changed no down_proj weight (it changed {changed}); "
                            "embedding-space projection reads MLP value matrices: pass a record of a weight "
                            "editor such as rome, memit or ft-l")
    return dict(sorted(found.items()))


def _ranks(logits: torch.Tensor, targets: Sequence[int]) -> torch.Tensor:
    """Rank [n_targets, n] of each target among each row's logits [n, vocab] (0 = top; ties favour it)."""
    return torch.stack([(logits > logits[:, t:t + 1]).sum(-1) for t in targets]).cpu()


def _base_hits(model, matrix: torch.Tensor, targets: Sequence[int], ks: Sequence[int], final_norm: bool
               ) -> list[dict[int, int]]:
    """Per target: how many columns of `matrix` [d_model, d_mlp] have it in their top k, for each k."""
    counts = [dict.fromkeys(ks, 0) for _ in targets]
    for start in range(0, matrix.shape[1], CHUNK):
        ranks = _ranks(unembed(model, matrix[:, start:start + CHUNK].T, final_norm), targets)
        for i, row in enumerate(ranks):
            for k in ks:
                counts[i][k] += int((row < k).sum())
    return counts


def target_token(model, request: EditRequest | dict) -> tuple[str, int]:
    """The new target's text and first token id, as the model tokenizes it after the prompt."""
    if not isinstance(request, EditRequest):
        request = EditRequest.from_json(request)
    return request.target_new, model.answer_ids(request.prompt, request.target_new)[0]


@torch.no_grad()
def _project_layer(model, record: EditRecord, layer: int, name: str, targets: list[tuple[str, int]],
                   n_columns: int, seed: int, ks: tuple[int, ...], final_norm: bool, top_k: int) -> LayerProjection:
    device = weights.unembedding(model).device
    before = record.before[name].to(device, torch.float32)
    after = record.after[name].to(device, torch.float32)
    delta = after - before
    norms = delta.norm(dim=0)
    changed = int((norms > 0).sum())
    chosen = norms.topk(min(n_columns, changed)).indices.tolist()
    others = [c for c in range(before.shape[1]) if c not in set(chosen)]
    draw = random.Random(f"{seed}/{layer}/{json.dumps(record.requests, sort_keys=True)}")
    drawn = sorted(draw.sample(others, min(n_columns, len(others))))
    ids = [t for _, t in targets]
    projected = {"before": unembed(model, before[:, chosen].T, final_norm),
                 "after": unembed(model, after[:, chosen].T, final_norm),
                 "delta": unembed(model, delta[:, chosen].T, final_norm)}
    top_ranks = {w: _ranks(p, ids) for w, p in projected.items()}
    rand_ranks = {w: _ranks(unembed(model, m[:, drawn].T, final_norm), ids)
                  for w, m in (("before", before), ("after", after))}
    base = {w: _base_hits(model, m, ids, ks, final_norm) for w, m in (("before", before), ("after", after))}
    labels = model.labels(ids)
    hits = [TargetHits(text, tid, label,
                       top={w: ColumnHits(chosen, r[i].tolist(), ks) for w, r in top_ranks.items()},
                       random={w: ColumnHits(drawn, r[i].tolist(), ks) for w, r in rand_ranks.items()},
                       base={w: BaseRate(before.shape[1], base[w][i], n_columns) for w in base})
            for i, ((text, tid), label) in enumerate(zip(targets, labels, strict=True))]
    tokens = {w: [model.labels(row.topk(top_k).indices.cpu()) for row in projected[w]] for w in ("before", "after")}
    total = float(delta.pow(2).sum())
    return LayerProjection(layer, name, float(total ** 0.5), chosen, [float(norms[c]) for c in chosen],
                           float(norms[chosen].pow(2).sum()) / total, tokens, hits)


def project_edit(model, record: EditRecord, n_columns: int = N_COLUMNS, seed: int = 0, ks: Sequence[int] = KS,
                 final_norm: bool = False, top_k: int = 10, base_fingerprint: str | None = None) -> EditProjection:
    """Project an edit of MLP value matrices into the vocabulary (see the module's choices).

    `model` must be the model the edit was made on (its fingerprint, or `base_fingerprint` for an edited
    copy); it may hold the edit or not, since W and W' come from the record. `top_k` is how many tokens each
    top column lists; `ks` the Hit@k cut-offs."""
    record.check_model(model, base_fingerprint)
    if n_columns < 1:
        raise KelocateError(f"the number of columns must be at least 1, got {n_columns}")
    if not record.requests:
        raise KelocateError(f"this {record.method} record names no request, so there is no target to look for")
    ks = tuple(sorted({check_top_k(model, k) for k in ks}))
    top_k = check_top_k(model, top_k)
    found = _edited_value_layers(record)
    targets = [target_token(model, r) for r in record.requests]
    layers = [_project_layer(model, record, layer, name, targets, n_columns, seed, ks, final_norm, top_k)
              for layer, name in found.items()]
    headline = max(layers, key=lambda p: p.delta_norm).layer
    choices = [NORM_CHOICE if final_norm else RAW_CHOICE, SIGN_CHOICE,
               f"columns: the {n_columns} columns of dW = W' - W with the largest L2 norm (changed columns only)",
               f"headline layer {headline}: the edited down_proj layer with the largest ||dW||_F "
               f"(of {', '.join(map(str, found))})",
               "target: the first token of the new target as tokenized after the prompt",
               f"controls: {n_columns} random columns of the same layer outside the top ones (seeded by {seed}, "
               "the layer and the record's requests), and the base rate over every column of the layer"]
    return EditProjection(record.method, model.name, final_norm, n_columns, seed, ks, headline, layers, choices)


# ====================================================================== many edits
def summarise(projections: Sequence[EditProjection], ks: Sequence[int] = KS) -> dict[str, Any]:
    """Mean headline numbers over edits (of one method): top and random columns before and after ("any" and
    "mean"), the dW columns themselves, and the base rates; the data a Figure 7 bar chart draws."""
    if not projections:
        raise KelocateError("no edit projections to summarise")

    def mean(which: str, when: str, how: str, k: int) -> float:
        return sum(p.hit(which, when, how, k) for p in projections) / len(projections)

    out: dict[str, Any] = {"n": len(projections), "methods": sorted({p.method for p in projections})}
    for which, whens, hows in (("top", ("before", "after", "delta"), ("any", "mean")),
                               ("random", ("before", "after"), ("any", "mean")),
                               ("base", ("before", "after"), ("rate", "any_of"))):
        out[which] = {when: {how: {str(k): mean(which, when, how, k) for k in ks} for how in hows}
                      for when in whens}
    return out
