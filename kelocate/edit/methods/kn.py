"""KN (Dai et al. 2022, as in EasyEdit): edit the value slots of given knowledge neurons.

A neuron (layer, i) writes column i of that layer's `down_proj.weight` [d_model, d_mlp] into the residual
stream (its "value slot"). KN takes the neurons (from a locator such as integrated gradients; it never
runs one itself) and

- mode "erase": sets their slots to zero;
- mode "update" (default): slot -= lambda * E[old] and slot += lambda * E[new], with E the INPUT
  embedding, old the ground-truth answer's tokens (else the model's current argmax next token) and new
  the target's tokens. With a single-token old and new answer lambda = `lambda_single` (2, as published);
  otherwise every old token's embedding is subtracted once and every new token's added once, each with
  `lambda_multi` (1).

`KN().apply(model, request, neurons=[(layer, index), ...])`; the record keeps the neurons.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from kelocate.edit.base import Editor
from kelocate.edit.record import EditRecord
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError
from kelocate.model import weights

MODES = ("update", "erase")


def check_neurons(model, neurons: Iterable[Sequence[int]] | None) -> list[tuple[int, int]]:
    """Neurons as sorted, distinct (layer, index) int pairs of `model` (one line of error otherwise)."""
    if neurons is None:
        raise KelocateError("kn edits knowledge neurons; pass neurons=[(layer, index), ...] (find them with "
                            "find_knowledge_neurons)")
    if isinstance(neurons, (str, bytes)) or not isinstance(neurons, Iterable):
        raise KelocateError(f"neurons must be a list of (layer, index) pairs, got {neurons!r}")
    out = []
    for neuron in neurons:
        if isinstance(neuron, (str, bytes)) or not isinstance(neuron, Sequence) or len(neuron) != 2 or not all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in neuron):
            raise KelocateError(f"neuron {neuron!r} is not a (layer, index) pair of integers; pass e.g. "
                                "neurons=[(4, 123)]")
        layer, index = int(neuron[0]), int(neuron[1])
        if not 0 <= layer < model.n_layers:
            raise KelocateError(f"neuron {(layer, index)}: layer {layer} does not exist: the model has layers "
                                f"0..{model.n_layers - 1}")
        if not 0 <= index < model.d_mlp:
            raise KelocateError(f"neuron {(layer, index)}: index {index} does not exist: the MLP has neurons "
                                f"0..{model.d_mlp - 1}")
        out.append((layer, index))
    if not out:
        raise KelocateError("no neurons given; pass neurons=[(layer, index), ...] (find them with "
                            "find_knowledge_neurons)")
    return sorted(dict.fromkeys(out))


def slot_update(weight: torch.Tensor, neurons_in_layer: Sequence[int], old_ids: Sequence[int],
                new_ids: Sequence[int], embedding: torch.Tensor, lambdas: tuple[float, float]) -> torch.Tensor:
    """A copy of `weight` [d_model, d_mlp] with, for each column i in `neurons_in_layer`,
    column_i - lambdas[0] * sum(E[old_ids]) + lambdas[1] * sum(E[new_ids]) (computed in float64, stored in
    weight's dtype). `embedding` is the input embedding [vocab, d_model]."""
    lam_old, lam_new = float(lambdas[0]), float(lambdas[1])
    emb = embedding.detach()
    shift = torch.zeros(weight.shape[0], dtype=torch.float64, device=weight.device)
    if len(old_ids):
        shift -= lam_old * emb[torch.as_tensor(list(old_ids), device=emb.device)].double().sum(0).to(weight.device)
    if len(new_ids):
        shift += lam_new * emb[torch.as_tensor(list(new_ids), device=emb.device)].double().sum(0).to(weight.device)
    out = weight.detach().clone()
    columns = torch.as_tensor(sorted(set(int(i) for i in neurons_in_layer)), dtype=torch.long, device=weight.device)
    if len(columns):
        out[:, columns] = (out[:, columns].double() + shift[:, None]).to(out.dtype)
    return out


def old_answer_ids(model, request: EditRequest) -> list[int]:
    """The tokens KN removes: the ground truth's, else the model's current argmax next token."""
    if request.ground_truth is not None and request.ground_truth.strip():
        return list(model.answer_ids(request.prompt, request.ground_truth))
    return [int(model.next_token_probs(request.prompt).argmax())]


class KN(Editor):
    """Knowledge-neuron editing: erase or rewrite the value slots of given neurons."""

    method = "kn"
    batch = False

    def __init__(self, config_file=None, **overrides: Any) -> None:
        super().__init__(config_file, **overrides)
        self._neurons: list[tuple[int, int]] | None = None

    def apply(self, model, requests, neurons: Iterable[Sequence[int]] | None = None,
              layers: int | Iterable[int] | None = None, layer_origin: dict[str, Any] | None = None) -> EditRecord:
        """Edit the value slots of `neurons` ((layer, index) pairs) for `requests` (one request)."""
        checked = check_neurons(model, neurons)
        neuron_layers = sorted({layer for layer, _ in checked})
        if layers is not None:
            given = [layers] if isinstance(layers, int) else list(layers)
            if sorted({model.check_layer(int(v)) for v in given}) != neuron_layers:
                raise KelocateError(f"kn edits the layers of its neurons ({neuron_layers}), not {given}; pass "
                                    "neurons only")
        origin = dict(layer_origin or {"source": "neurons", "n_neurons": len(checked)})
        self._neurons = checked
        try:
            return super().apply(model, requests, layers=neuron_layers, layer_origin=origin)
        finally:
            self._neurons = None

    def _check(self, model, requests, layers, hp) -> None:
        if self._neurons is None:
            raise KelocateError("kn edits knowledge neurons; call KN().apply(model, request, neurons=[(layer, "
                                "index), ...])")
        if hp["mode"] not in MODES:
            raise KelocateError(f"unknown kn mode {hp['mode']!r}; use one of {', '.join(MODES)}")

    def _edit(self, model, requests: list[EditRequest], layers: list[int], hp: dict[str, Any]) -> dict[str, Any]:
        (request,) = requests
        neurons = list(self._neurons or [])
        by_layer: dict[int, list[int]] = {}
        for layer, index in neurons:
            by_layer.setdefault(layer, []).append(index)
        extra: dict[str, Any] = {"neurons": neurons, "mode": hp["mode"]}
        if hp["mode"] == "erase":
            with torch.no_grad():
                for layer, columns in by_layer.items():
                    weights.mlp_out(model, layer)[:, columns] = 0
            return extra
        old = old_answer_ids(model, request)
        new = list(model.answer_ids(request.prompt, request.target_new))
        single = len(old) == 1 and len(new) == 1
        lam = float(hp["lambda_single"] if single else hp["lambda_multi"])
        embedding = weights.embedding(model)
        with torch.no_grad():
            for layer, columns in by_layer.items():
                param = weights.mlp_out(model, layer)
                param.copy_(slot_update(param, columns, old, new, embedding, (lam, lam)))
        notes = [] if request.ground_truth else ["no ground truth: removed the model's current top next token"]
        return extra | {"old_ids": old, "new_ids": new, "lambda": lam, "notes": notes}
