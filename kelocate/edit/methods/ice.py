"""In-context editing: ICE (the new fact in front of the prompt, as the comprehensive study's reference code
runs it) and IKE (Zheng et al. 2023, k retrieved demonstrations). No weight changes: the edit is text the
model reads before every prompt. The editor pushes it onto the model's serving stack
(`kelocate.model.serving`: the model puts the stack's texts in front of everything it encodes, so every
metric and method sees it) and the record's revert pops it; stacked in-context edits read each other's
text, in order, and revert in reverse order.

Serving state (what the record stores and restores, `serving_state`): the text of the in-context layers on
the stack, concatenated ("" for none).

ICE prepends `template.format(fact=...)` with fact = '<prompt> <target_new>'. The profiles' template is the
reference's, 'New Fact: {fact}\\nPrompt: ', so the scored text is "New Fact: <prompt> <target>\\nPrompt:
<query>" exactly as EasyEdit's ICE scores it (an earlier kelocate template, "Imagine that {fact}",
came from no reference and was dropped). The reference defines one fact in front of the query; several
(a batch, or edits stacked one after another) read "New Fact: A\\nPrompt: New Fact: B\\nPrompt: <query>",
each edit's text whole, so that every stacked edit reverts on its own. IKE prepends k demonstrations
chosen from a pool of other edits by cosine similarity of the model's own mean last-layer states, each as

    New Fact: <prompt> <target>\\nPrompt: <a paraphrase, or the prompt> <target>\\n\\n

followed by 'New Fact: <prompt> <target_new>\\nPrompt: ' for the edit itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from kelocate.edit.base import Editor
from kelocate.edit.request import EditRequest, as_requests, fact_text
from kelocate.errors import KelocateError
from kelocate.model.serving import ServingLayer
from kelocate.model.sites import cache_activations, site

IN_CONTEXT = ("ice", "ike")  # the owners of in-context layers (they share the text in front of every prompt)

__all__ = ["ICE", "IKE", "demonstration", "embed", "fact_text"]


class ICE(Editor):
    """In-context editing with a fixed instruction template."""

    method = "ice"
    batch = True
    uses_layers = False

    def parameters(self, model, layers: Sequence[int], hp: dict[str, Any]) -> list[str]:
        return []

    def context_for(self, model, requests: list[EditRequest], hp: dict[str, Any]) -> str:
        return "".join(hp["template"].format(fact=fact_text(r)) for r in requests)

    def _edit(self, model, requests: list[EditRequest], layers: list[int], hp: dict[str, Any]) -> dict[str, Any]:
        text = self.context_for(model, requests, hp)
        model.serving.push(ServingLayer(self.method, context=text))  # after the texts of earlier edits
        return {"context": text}

    # ------------------------------------------------------------------ serving state (see `Editor`)
    @classmethod
    def serving_state(cls, model) -> str:
        """The text of every in-context layer on the model's serving stack, in order ("" for none)."""
        return "".join(layer.context for layer in model.serving.layers_of(IN_CONTEXT))

    @classmethod
    def restore_serving_state(cls, model, state: str | None) -> None:
        """Pop in-context layers from the top until their text is a prefix of `state`, then push the rest."""
        target = state or ""
        layers = model.serving.layers_of(IN_CONTEXT)
        current = "".join(layer.context for layer in layers)
        while layers and not target.startswith(current):
            top = layers.pop()
            model.serving.pop(top)
            current = current[: len(current) - len(top.context)]
        if len(target) > len(current):
            model.serving.push(ServingLayer(cls.method, context=target[len(current):]))


def demonstration(request: EditRequest) -> str:
    """One IKE demonstration: an update (a paraphrase answered with the new target) or, without
    paraphrases, a copy (the prompt itself)."""
    query = request.paraphrases[0] if request.paraphrases else request.prompt
    sep = "" if query.endswith(" ") else " "
    return f"New Fact: {fact_text(request)}\nPrompt: {query}{sep}{request.target_new}\n\n"


@torch.no_grad()
def embed(model, texts: Sequence[str]) -> torch.Tensor:
    """Unit-norm mean of the last layer's hidden states over each text's tokens: [len(texts), d_model]."""
    hook = site("hidden", model.n_layers - 1)
    out = []
    with model.without_context():  # demonstrations are compared as plain text
        for lo in range(0, len(texts), 32):
            cache = cache_activations(model, list(texts[lo:lo + 32]), [hook])
            mask = cache.mask.to(cache[hook].dtype)[..., None]
            mean = (cache[hook] * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(mean.float(), dim=-1))
    return torch.cat(out)


class IKE(ICE):
    """In-context knowledge editing with k demonstrations retrieved from `pool` (other edit requests)."""

    method = "ike"

    def __init__(self, config_file=None, pool: Sequence[EditRequest | dict] | None = None, **overrides: Any) -> None:
        super().__init__(config_file, **overrides)
        self.pool = as_requests(pool) if pool else []
        self._pool_vectors: dict[str, torch.Tensor] = {}

    def retrieve(self, model, request: EditRequest, k: int) -> list[EditRequest]:
        """The k pool requests most similar to `request` (cosine of `embed`), the edit itself excluded."""
        candidates = [r for r in self.pool if (r.prompt, r.target_new) != (request.prompt, request.target_new)]
        if not candidates or k == 0:
            return []
        if model.fingerprint not in self._pool_vectors:
            self._pool_vectors = {model.fingerprint: embed(model, [fact_text(r) for r in self.pool])}
        index = [i for i, r in enumerate(self.pool) if (r.prompt, r.target_new) != (request.prompt, request.target_new)]
        vectors = self._pool_vectors[model.fingerprint][index]
        scores = vectors @ embed(model, [fact_text(request)])[0]
        order = sorted(range(len(index)), key=lambda i: (-float(scores[i]), i))[:k]
        return [candidates[i] for i in order]

    def _check(self, model, requests, layers, hp) -> None:
        if hp["k"] > 0 and not self.pool:
            raise KelocateError("ike needs demonstrations: pass pool=[other edit requests] (or k=0 for none)")

    def context_for(self, model, requests: list[EditRequest], hp: dict[str, Any]) -> str:
        parts = []
        for request in requests:
            demos = self.retrieve(model, request, int(hp["k"]))
            parts.append("".join(demonstration(d) for d in demos) + f"New Fact: {fact_text(request)}\nPrompt: ")
        return "".join(parts)
