"""The common answer of every locator: a `Location`, and the `Locator` protocol that produces one.

A layer-level locator (causal tracing) fills `layer_scores`; a neuron-level one (knowledge neurons) fills
`neurons` and, summed per layer, `layer_scores` too. KLoB (`kelocate.probes.klob`) compares locations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kelocate.errors import KelocateError


@dataclass
class Location:
    """What a locator found for one prompt: per-layer scores and/or a set of (layer, neuron) pairs."""

    layer_scores: np.ndarray | None = None
    neurons: frozenset[tuple[int, int]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def top_layers(self, k: int) -> frozenset[int]:
        """The k highest-scoring layers (ties go to the lower layer)."""
        if self.layer_scores is None:
            raise KelocateError("this location has no layer scores; use a neuron-level similarity")
        scores = np.asarray(self.layer_scores, dtype=float)
        order = np.lexsort((np.arange(len(scores)), -scores))
        return frozenset(int(i) for i in order[:k])


@runtime_checkable
class Locator(Protocol):
    """Anything that answers "where is the fact this prompt asks for?"."""

    name: str

    def locate(self, model: Any, prompt: str, answer: str | None = None,
               subject: str | None = None) -> Location:
        """Locate the knowledge used to complete `prompt` (with `answer`, or the model's own top token)."""
        ...
