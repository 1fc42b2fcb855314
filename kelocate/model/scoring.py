"""ONE batched teacher-forced scorer, and a gradient-enabled forward for editors.

`score_ids` feeds prompt + target tokens (right-padded, sorted by length so that a batch wastes little on
padding) and reads, at each target position, the target token's log-probability and whether it is the
argmax. Everything that scores an answer uses it: `HookedModel.answer_logprob`, the organism's recall,
and the KnowEdit metrics (edit success and portability are argmax accuracy of target tokens; locality
compares argmaxes before and after an edit).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from kelocate.errors import KelocateError
from kelocate.model.tokens import pad_batch
from kelocate.timing import timed

# a forward pass: ids [batch, pos] and attention mask -> logits [batch, pos, vocab]
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TargetScore:
    """Teacher-forced score of one target after one prompt."""

    target_ids: tuple[int, ...]
    logprobs: tuple[float, ...]  # log p of each target token given everything before it
    hits: tuple[bool, ...]  # whether each target token is the argmax at its position
    predicted: tuple[int, ...]  # the argmax token at each target position

    @property
    def logprob(self) -> float:
        """log p(target): the sum of its tokens' log-probabilities."""
        return float(sum(self.logprobs))

    @property
    def prob(self) -> float:
        return float(torch.tensor(self.logprob, dtype=torch.float64).exp())

    @property
    def accuracy(self) -> float:
        """Fraction of target tokens that are the argmax (KnowEdit's token accuracy)."""
        return sum(self.hits) / len(self.hits) if self.hits else 0.0

    @property
    def correct(self) -> bool:
        """Every target token is the argmax: greedy decoding would produce the target."""
        return bool(self.hits) and all(self.hits)


@torch.no_grad()
def score_ids(forward: Forward, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
              pad_id: int, batch_size: int = 64, device: torch.device | str | None = None) -> list[TargetScore]:
    """Score `targets[i]` after `prompts[i]` (token ids); results in the input order."""
    if len(prompts) != len(targets):
        raise KelocateError(f"got {len(prompts)} prompts and {len(targets)} targets; pass one target per prompt")
    for i, (p, t) in enumerate(zip(prompts, targets, strict=True)):
        if len(p) == 0 or len(t) == 0:
            raise KelocateError(f"item {i} has an empty {'prompt' if len(p) == 0 else 'target'}; nothing to score")
    if batch_size < 1:
        raise KelocateError(f"the batch size must be at least 1, got {batch_size}")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(targets[i]))
    out: list[TargetScore | None] = [None] * len(prompts)
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        # the last target token is predicted, never fed
        rows = [list(prompts[i]) + list(targets[i])[:-1] for i in idx]
        ids, mask = pad_batch(rows, pad_id)
        if device is not None:
            ids, mask = ids.to(device), mask.to(device)
        logits = forward(ids, mask)
        for row, i in enumerate(idx):
            start = len(prompts[i]) - 1
            target = torch.as_tensor(list(targets[i]), dtype=torch.long, device=logits.device)
            logp = torch.log_softmax(logits[row, start : start + len(target)].float(), dim=-1)
            picked = logp.gather(1, target[:, None])[:, 0]
            best = logp.argmax(dim=-1)
            out[i] = TargetScore(tuple(int(t) for t in target.tolist()), tuple(picked.tolist()),
                                 tuple(bool(b) for b in (best == target).tolist()), tuple(best.tolist()))
    return out  # type: ignore[return-value]


@timed("scoring")
def score_targets(model, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 64) -> list[TargetScore]:
    """Teacher-forced scores of text targets after text prompts on a `HookedModel` (hooks attached apply).

    Prompts are encoded the tokenizer's default way, targets as they continue their prompt.
    """
    if len(prompts) != len(targets):
        raise KelocateError(f"got {len(prompts)} prompts and {len(targets)} targets; pass one target per prompt")
    prompt_ids = [model.encode(p).ids.tolist() for p in prompts]
    target_ids = [model.answer_ids(p, t) for p, t in zip(prompts, targets, strict=True)]
    return score_ids(model.logits, prompt_ids, target_ids, model.pad_id, batch_size, model.device)


# ---------------------------------------------------------------------- gradients for editors
@contextlib.contextmanager
def grad_on(model, params: Iterable[torch.nn.Parameter | str]) -> Iterator[list[torch.nn.Parameter]]:
    """Gradients for the chosen parameters only (objects or HF parameter names), inside the block.

    Every other parameter has `requires_grad` off meanwhile, so autograd keeps no graph for them; the
    previous flags are restored afterwards, also when the block raises.
    """
    from kelocate.model.weights import parameter

    named = dict(model.hf.named_parameters())
    chosen = [parameter(model, p) if isinstance(p, str) else p for p in params]
    before = {name: p.requires_grad for name, p in named.items()}
    ids = {id(p) for p in chosen}
    try:
        for p in named.values():
            p.requires_grad_(id(p) in ids)
        with torch.enable_grad():
            yield chosen
    finally:
        for name, p in named.items():
            p.requires_grad_(before[name])


def forward_with_grad(model, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [batch, pos, vocab] with autograd on (use inside `grad_on`); hooks attached to the bridge apply."""
    if ids.dim() == 1:
        ids = ids[None]
    kwargs = {} if attention_mask is None else {"attention_mask": attention_mask.to(model.device)}
    with torch.enable_grad():
        return model.bridge(ids.to(model.device), **kwargs)
