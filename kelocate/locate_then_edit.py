"""Locate, then edit: where an editor writes, found by the locators, then the edit itself.

Editors never run a locator (they take layers or neurons); this module, above both `locate/` and `edit/`,
wires them: `locate_and_edit(model, editor, requests, layers="auto")` asks the editor what it needs
located (`editor.locate`: nothing, knowledge neurons, one MLP layer or a range of layers), finds it, and
applies the edit with where it came from recorded in the edit record. KN's neurons come from integrated
gradients (`locate_neurons`); layers from causal tracing (`auto_layers`).

`auto_layers` traces an edit request's prompt (or each of a data set's, averaging their effects), refuses
a trace that failed its validity checks (with the reason), and picks layers from single-layer effects at
the chosen token:

- one layer (ROME, FT-L, FT-M): the layer whose MLP output, restored alone, recovers the answer most;
- a range of n layers (MEMIT, AlphaEdit, PMET): as MEMIT chose its range, the n consecutive layers where
  the MLPs matter most for the hidden state: the largest summed gap between the hidden-state effect and
  the same effect with the later MLPs severed (frozen at their corrupted values).

It returns the layers and a summary of the trace (kind, token, effects, validity) that goes into the
edit record as `layer_origin`. `locate_and_edit` runs both steps: locate, then apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kelocate.edit.request import EditRequest, as_requests
from kelocate.errors import KelocateError
from kelocate.locate.causal_trace import trace
from kelocate.locate.causal_trace.problem import severed_key
from kelocate.locate.neurons import find_knowledge_neurons


def _effects(row: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in np.nan_to_num(row, nan=0.0)]


def _scores(model, request: EditRequest, n_layers: int, token: str | int, samples: int,
            seed: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-layer scores of one request's trace (single-layer MLP effects, or the severed-MLP gap), and a
    summary; raises a one-line error for an invalid trace."""
    kwargs: dict[str, Any] = {"samples": samples}
    if seed is not None:
        kwargs["seed"] = seed
    if n_layers == 1:
        result = trace(model, request.prompt, request.subject, answer=request.ground_truth, kinds="mlp", **kwargs)
    else:
        result = trace(model, request.prompt, request.subject, answer=request.ground_truth, kinds="hidden",
                       severed="mlp", **kwargs)
    try:
        result.require_valid()
    except KelocateError as exc:
        raise KelocateError(f"auto layers: {exc}; pass --layers explicitly") from None
    row = result.token_index(token)
    if n_layers == 1:
        scores = result.window_grid("mlp", "single")[row] - result.corrupted_score
    else:
        scores = result.grid("hidden")[row] - result.grid(severed_key("mlp"))[row]
    summary = {"prompt": request.prompt, "subject": request.subject, "answer": result.answer,
               "token_label": result.tokens[row], "clean_score": round(result.clean_score, 5),
               "corrupted_score": round(result.corrupted_score, 5)}
    return np.nan_to_num(scores, nan=0.0), summary


def auto_layers(model, requests: EditRequest | dict | Sequence[EditRequest | dict], n_layers: int = 1,
                token: str | int = "last_subject", samples: int = 10,
                seed: int | None = None) -> tuple[list[int], dict[str, Any]]:
    """Layers to edit, located by causal tracing of one request or averaged over several (a data set);
    and where they came from (JSON-ready).

    n_layers=1 picks the single MLP layer with the largest effect; n_layers>1 the range with the largest
    MLP share of the hidden-state effect (MEMIT's choice). One request with an invalid trace is an error;
    over several, invalid traces are left out and counted (all invalid is an error)."""
    requests = as_requests(requests)
    if n_layers < 1 or n_layers > model.n_layers:
        raise KelocateError(f"cannot pick {n_layers} layers of a {model.n_layers}-layer model; "
                            f"pass 1..{model.n_layers}")
    rows, summaries, refused = [], [], []
    for request in requests:
        try:
            scores, summary = _scores(model, request, n_layers, token, samples, seed)
        except KelocateError as exc:
            if len(requests) == 1:
                raise
            refused.append({"prompt": request.prompt, "reason": str(exc)})
            continue
        rows.append(scores)
        summaries.append(summary)
    if not rows:
        raise KelocateError(f"auto layers: none of the {len(requests)} traces is valid (first: "
                            f"{refused[0]['reason']}); pass --layers explicitly")
    effect = np.mean(rows, axis=0)
    origin: dict[str, Any] = {"source": "trace", "token": token, "samples": samples, "traced": len(rows),
                              "refused": refused, **summaries[0]}
    if n_layers == 1:
        order = np.lexsort((np.arange(effect.shape[0]), -effect))
        layers = [int(order[0])]
        origin |= {"kind": "mlp", "window": "single", "effects": _effects(effect)}
        return layers, origin
    sums = [float(effect[start:start + n_layers].sum()) for start in range(model.n_layers - n_layers + 1)]
    start = int(np.argmax(sums))
    origin |= {"kind": "hidden - hidden_severed_mlp", "window": "range", "n_layers": n_layers,
               "effects": _effects(effect), "range_sums": [round(v, 5) for v in sums]}
    return list(range(start, start + n_layers)), origin


def locate_neurons(model, request: EditRequest | dict, steps: int = 20,
                   max_paraphrases: int = 3) -> tuple[list[tuple[int, int]], dict[str, Any]]:
    """Knowledge neurons of the request's old answer (integrated gradients over the prompt and up to
    `max_paraphrases` paraphrases, refined), for KN; and where they came from (JSON-ready)."""
    (request,) = as_requests(request)
    prompts = [request.prompt, *request.paraphrases[:max_paraphrases]]
    found = find_knowledge_neurons(model, prompts, request.ground_truth, steps=steps)
    if not found.neurons:
        raise KelocateError(f"no knowledge neurons found for {request.prompt!r}; pass neurons explicitly")
    origin = {"source": "knowledge neurons", "prompts": prompts, "answer": found.answer, "steps": steps,
              "neurons": [list(n) for n in found.neurons], "notes": list(found.notes)}
    return [tuple(n) for n in found.neurons], origin


def locate_and_edit(model, editor, requests: EditRequest | dict | Sequence[EditRequest | dict],
                    layers: str | int | Sequence[int] | None = None, token: str | int | None = None,
                    samples: int = 10):
    """Apply `editor` to `requests`; layers='auto' locates them first (for a batch: effects averaged over
    every request's valid trace), recording the trace summary in the edit record. The trace is read at
    the token the editor writes (its `token` setting) unless `token` says otherwise."""
    requests = as_requests(requests)
    if editor.locate is None:  # nothing to locate: in-context text, or MEND's own layers
        return editor.apply(model, requests)
    if editor.locate == "neurons":  # KN edits neurons, located by integrated gradients
        neurons, origin = locate_neurons(model, requests[0])
        return editor.apply(model, requests, neurons=neurons, layer_origin=origin)
    if layers != "auto":
        return editor.apply(model, requests, layers=layers)
    hp = editor.hparams(model)
    if token is None:
        token = hp.get("token", "last_subject")  # editors name their token as tracing names its rows
    n_layers = len(hp.get("layers") or [1]) if editor.locate == "range" else 1
    found, origin = auto_layers(model, requests, n_layers, token, samples)
    return editor.apply(model, requests, layers=found, layer_origin=origin)
