"""Suppress (x0) or enhance (x2) knowledge neurons, reversibly, and measure p(answer) before and after.

The scaling is a `Patch` (model/sites.py) at each layer's `mlp_post` site (`blocks.{l}.mlp.hook_post`, the
input of `down_proj`), the one way kelocate writes activations: every forward of the bridge inside
`scale_neurons` sees it (`answer_prob`, the batched scorer: every kelocate score), and the hooks are removed
on exit; no weight changes. It writes out of place: the activation tensor itself is left unscaled, so what
else holds it (a reader attached to that hook point before the scaling) keeps the model's own values; the
scaled copy is what flows on. The bridge wraps the Hugging Face model's own modules, so a raw forward
(`model.hf(...)`, `generate`) runs through the same hook point and is scaled too (tested). By default only
the prompt's last position (the one attributed) is scaled.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kelocate.errors import KelocateError
from kelocate.model.sites import Patch, patching, site

Neuron = tuple[int, int]


@contextlib.contextmanager
def scale_neurons(model, neurons: Sequence[Neuron], factor: float,
                  position: int | None = None) -> Iterator[None]:
    """Multiply the activations of `neurons` by `factor` at `position` (None: every position).

    Applies to every forward inside the block that passes the `mlp_post` hook points: the bridge's (every
    kelocate score: `answer_prob`, `logits`, `run_patched`) and the wrapped HF model's (`model.hf`,
    `generate`). Written out of place: the activation tensor itself is not changed.
    """
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, idx in neurons:
        layer = model.check_layer(layer)
        if not 0 <= idx < model.d_mlp:
            raise KelocateError(f"neuron {idx} does not exist: layers have neurons 0..{model.d_mlp - 1}")
        by_layer[layer].append(idx)

    def scaler(idx: list[int]):
        index = torch.tensor(sorted(set(idx)), dtype=torch.long)

        def scale(x: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            cols = index.to(x.device)
            if position is None:
                x[..., cols] = x[..., cols] * factor
            elif position < x.shape[-2]:  # a shorter input has no such position: left as it is
                x[..., position, cols] = x[..., position, cols] * factor
            return x

        return scale

    # out of place (`differentiable`): the scaled copy goes on, the activation tensor itself stays as it was
    patches = [Patch(site("mlp_post", layer), scaler(idx), differentiable=True) for layer, idx in by_layer.items()]
    with patching(model, patches):
        yield


def prompt_position(model, prompt: str) -> int:
    """The prompt's last position (the one attributed, and scaled by default)."""
    return len(model.encode(prompt)) - 1


@dataclass
class Intervention:
    """p(answer) per prompt before and after scaling a set of neurons."""

    factor: float
    before: list[float]
    after: list[float]

    @property
    def mean_change(self) -> float:
        """Mean relative change of p(answer) over the prompts: (after - before) / before."""
        pairs = zip(self.before, self.after, strict=True)
        return float(np.mean([(a - b) / b if b > 0 else 0.0 for b, a in pairs]))

    @property
    def mean_logodds_change(self) -> float:
        """Mean change of log(p / (1 - p)): readable where p is near 1 and relative changes look small."""
        return float(np.mean([logodds(a) - logodds(b) for b, a in zip(self.before, self.after, strict=True)]))

    def to_dict(self) -> dict[str, Any]:
        return {"factor": self.factor, "before": self.before, "after": self.after,
                "mean_relative_change": self.mean_change, "mean_logodds_change": self.mean_logodds_change}


def logodds(p: float, eps: float = 1e-12) -> float:
    """log(p / (1 - p)), clipped away from 0 and 1."""
    p = min(max(p, eps), 1.0 - eps)
    return float(np.log(p) - np.log1p(-p))


def intervene(model, neurons: Sequence[Neuron], prompts: Sequence[str], answer: str, factor: float,
              all_positions: bool = False, before: Sequence[float] | None = None) -> Intervention:
    """p(answer | prompt) before and with the neurons scaled by `factor` (0: suppress, 2: enhance).

    `before`: the unscaled probabilities when the caller already has them (they are measured otherwise).
    """
    before = [model.answer_prob(q, answer) for q in prompts] if before is None else list(before)
    after = []
    for q in prompts:
        with scale_neurons(model, neurons, factor, None if all_positions else prompt_position(model, q)):
            after.append(model.answer_prob(q, answer))
    return Intervention(factor, before, after)


def suppress(model, neurons: Sequence[Neuron], prompts: Sequence[str], answer: str,
             all_positions: bool = False) -> Intervention:
    """Zero the neurons' activations (x0)."""
    return intervene(model, neurons, prompts, answer, 0.0, all_positions)


def enhance(model, neurons: Sequence[Neuron], prompts: Sequence[str], answer: str,
            all_positions: bool = False) -> Intervention:
    """Double the neurons' activations (x2)."""
    return intervene(model, neurons, prompts, answer, 2.0, all_positions)


def random_like(neurons: Sequence[Neuron], d_mlp: int, rng: np.random.Generator) -> list[Neuron]:
    """As many random neurons per layer as `neurons` has there, avoiding the given neurons."""
    by_layer: dict[int, set[int]] = defaultdict(set)
    for layer, idx in neurons:
        by_layer[layer].add(idx)
    out: list[Neuron] = []
    for layer, taken in sorted(by_layer.items()):
        free = np.setdiff1d(np.arange(d_mlp), np.array(sorted(taken)))
        out.extend((layer, int(i)) for i in rng.choice(free, size=min(len(taken), len(free)), replace=False))
    return out


def random_control(model, neurons: Sequence[Neuron], prompts: Sequence[str], answer: str, factor: float,
                   draws: int = 10, seed: int = 0, all_positions: bool = False) -> dict[str, Any]:
    """The same intervention on `draws` random sets of as many neurons in the same layers.

    Returns the mean p(answer) after it per draw and their summary (the control for `intervene`).
    """
    rng = np.random.default_rng(seed)
    before = [model.answer_prob(q, answer) for q in prompts]  # the same for every draw
    after, changes, odds = [], [], []
    for _ in range(draws):
        res = intervene(model, random_like(neurons, model.d_mlp, rng), prompts, answer, factor, all_positions,
                        before)
        after.append(float(np.mean(res.after)))
        changes.append(res.mean_change)
        odds.append(res.mean_logodds_change)
    return {"draws": draws, "seed": seed, "mean_after_per_draw": after,
            "mean_after": float(np.mean(after)) if after else None,
            "mean_relative_change": float(np.mean(changes)) if changes else None,
            "mean_logodds_change": float(np.mean(odds)) if odds else None,
            "min_relative_change": float(np.min(changes)) if changes else None,
            "max_relative_change": float(np.max(changes)) if changes else None}
