"""The serving stack: what a model serves on top of its weights, pushed and popped by editors that change
no weight.

Some editors answer through the model without writing a weight: in-context editing puts text in front of
every prompt, a routing editor answers in-scope inputs with its own counterfactual model. Each of them
pushes a `ServingLayer` onto the model's `ServingStack` (`HookedModel.serving`) when it edits and pops it
when the edit is reverted. The model reads only the stack's two effects and names no editor:

- `context`: the texts of every layer, in push order, put in front of every prompt the model encodes
  (`HookedModel.encode`, subject spans and answer ids all see it, so every method stays consistent);
- `forward`: the top-most layer's forward override, `(ids, attention mask) -> logits`, which stands in
  for the bridge's forward in `HookedModel.logits` and so in every score and every generation.

Stacked edits are undone in reverse order: a layer is removed only when no layer above it overrides the
same thing (a text above a text: that later edit was made reading the text below it; a forward above a
forward: the later one serves in its place). A layer carries an opaque `state` for its owner (e.g. a
router) that the stack never reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from kelocate.errors import KelocateError

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ids, attention mask) -> logits


@dataclass(frozen=True, eq=False)
class ServingLayer:
    """One layer of what a model serves: text put before every prompt and/or a forward in place of the
    bridge's. `owner` names who pushed it (a method name, for messages and for the owner to find its own
    layers); `state` is the owner's, never read by the stack. Layers compare by identity."""

    owner: str
    context: str = ""
    forward: Forward | None = None
    state: Any = None


class ServingStack:
    """The layers a model serves, bottom first."""

    def __init__(self) -> None:
        self._layers: list[ServingLayer] = []

    def __iter__(self) -> Iterator[ServingLayer]:
        return iter(list(self._layers))

    def __len__(self) -> int:
        return len(self._layers)

    @property
    def context(self) -> str:
        """The text put in front of every prompt: every layer's text, in push order ("" for none)."""
        return "".join(layer.context for layer in self._layers)

    @property
    def forward(self) -> Forward | None:
        """The forward that stands in for the bridge's: the top-most layer's override (None: the bridge)."""
        for layer in reversed(self._layers):
            if layer.forward is not None:
                return layer.forward
        return None

    def layers_of(self, owner: str | tuple[str, ...]) -> list[ServingLayer]:
        """The layers pushed by `owner` (a name or several), bottom first."""
        owners = (owner,) if isinstance(owner, str) else owner
        return [layer for layer in self._layers if layer.owner in owners]

    def push(self, layer: ServingLayer) -> ServingLayer:
        """Put `layer` on top; returns it (the handle `pop` takes)."""
        if not isinstance(layer, ServingLayer):
            raise TypeError(f"push takes a ServingLayer, not {type(layer).__name__}")
        self._layers.append(layer)
        return layer

    def pop(self, layer: ServingLayer) -> None:
        """Remove `layer`: refused (one line) when it is not on the stack, or when a layer above it overrides the
        same thing (revert later edits first)."""
        index = next((i for i, x in enumerate(self._layers) if x is layer), None)
        if index is None:
            raise KelocateError(f"the model does not serve this {layer.owner} layer (already reverted?)")
        above = self._layers[index + 1:]
        if (layer.context and any(x.context for x in above)) or (layer.forward is not None and
                                                                  any(x.forward is not None for x in above)):
            raise KelocateError(f"a later edit served on top of this {layer.owner} edit is still applied; revert "
                                "later edits first (records stack: revert in reverse order)")
        del self._layers[index]
