"""The locators KLoB can score, behind the `Locator` protocol of `kelocate.locate.location`.

- `NeuronLocator`: knowledge neurons; the location is the coarse neuron set and, per layer, the sum of
  the positive attribution scores.
- `CausalTraceLocator`: ROME causal tracing of one kind (hidden / mlp / attn); the location is the row of
  indirect effects at the subject's last token (or the last token), one score per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kelocate.errors import KelocateError
from kelocate.locate.location import Location
from kelocate.model.tokens import EDIT_TOKENS


@dataclass
class NeuronLocator:
    """Integrated-gradient knowledge neurons as a locator."""

    steps: int = 20
    threshold: float = 0.2
    target: str = "prob"
    name: str = "neurons"

    def locate(self, model: Any, prompt: str, answer: str | None = None,
               subject: str | None = None) -> Location:
        from kelocate.locate.neurons.find import coarse_neurons, layer_profile
        from kelocate.locate.neurons.ig import integrated_gradients

        attr = integrated_gradients(model, prompt, answer, self.steps, self.target)
        rows = coarse_neurons(attr, self.threshold)
        return Location(np.asarray(layer_profile(attr)), frozenset((la, i) for la, i, _ in rows),
                        {"answer": attr.problem.answer, "target_value": attr.target_value})


@dataclass
class CausalTraceLocator:
    """Causal tracing (one kind) as a locator: layer scores = indirect effects at one token.

    `options` go to `kelocate.locate.causal_trace.trace` (noise, window, seed, ...).
    """

    kind: str = "mlp"
    samples: int = 10
    token: str = "last_subject"
    options: dict[str, Any] = field(default_factory=dict)
    name: str = "causal-trace"

    def locate(self, model: Any, prompt: str, answer: str | None = None,
               subject: str | None = None) -> Location:
        from kelocate.locate.causal_trace.tracing import trace

        result = trace(model, prompt, subject=subject, answer=answer, kinds=(self.kind,),
                       samples=self.samples, tokens=(self.token,), **self.options)
        location = result.to_location(self.kind, self.token)
        location.meta.update(clean_score=result.clean_score, corrupted_score=result.corrupted_score)
        return location


LOCATORS = ("causal-trace", "neurons")


def make_locator(name: str, kind: str = "mlp", steps: int = 20, samples: int = 10,
                 token: str = "last_subject", **options: Any):
    """A locator by CLI name (causal-trace or neurons); `options` go to `trace()`. Bad names raise one line."""
    if name == "neurons":
        return NeuronLocator(steps=steps)
    if name in ("causal-trace", "trace"):
        from kelocate.locate.causal_trace.tracing import parse_kinds

        kinds = parse_kinds(kind)
        if len(kinds) != 1:
            raise KelocateError(f"--kind must be one of hidden, mlp or attn for a locator, got {kind!r}")
        kind = kinds[0]
        if token not in EDIT_TOKENS:
            raise KelocateError(f"unknown --token {token!r}; use {' or '.join(EDIT_TOKENS)}")
        return CausalTraceLocator(kind=kind, samples=samples, token=token, options=options)
    raise KelocateError(f"unknown locator {name!r}; use {' or '.join(LOCATORS)}")
