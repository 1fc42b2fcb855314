"""ONE sampler: token by token continuation of a batch of ids, greedy, top-k or from the full distribution.

Every loop that makes text with a model goes through `sample`: the greedy loop of a served model
(`HookedModel.generate` when an editor answers in place of the bridge), the KnowEdit fluency continuation,
the context prefixes key-value editors average their keys over, and the text generated for key
statistics when a model has no corpus of its own.

Each step runs `step(ids)` and appends one token per row. The default step decodes with a key/value cache on
the block runner's weights where it may stand in for the bridge (`stack_decoding`), else on the plain HF twin
(`twin.decoding_step`; a served forward may offer its own, as SERAC's router does), else it is the model's
`logits` at the last position (so hooks apply and a served editor samples too); a caller may pass its own.
Cached and uncached steps choose the same tokens (tested: greedy token for token, sampled logits to float
tolerance):

- `greedy`: the argmax (the first of equal maxima);
- `top_k`: softmax over the k largest logits, one draw from `generator` among them;
- neither: softmax over the whole vocabulary, one draw.

Draws always come from a CPU generator on CPU probabilities (`torch.multinomial(probs.cpu(), 1)`), so a seed
means the same on any device; the distribution is computed where `step` returns its logits. Tokens in `ban`
are never chosen (their logits are set to -inf first). With `stop_at`, sampling ends after the step in
which every row drew that token (the token is kept).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from kelocate.model.stack_decoding import stack_decoding_step
from kelocate.model.twin import decoding_step

Step = Callable[[torch.Tensor], torch.Tensor]  # ids [batch, pos] -> next-token logits [batch, vocab]


def cached_step(model) -> Step | None:
    """Cached decoding of the bare model where it is exact: the block runner's decoder where the block runner
    may stand in (`stack_decoding`), else HF's cache on the plain twin (`twin.decoding_step`), else None."""
    return stack_decoding_step(model) or decoding_step(model)


def default_step(model) -> Step:
    """The step `sample` takes when given none: cached decoding where it is exact (`cached_step`, or a served
    forward's own `decoding_step()` such as SERAC's router), else the model's `logits` at the last position.
    A fresh one per sampling loop (it keeps that loop's cache)."""
    served = model.serving.forward
    if served is None:
        cached = cached_step(model)
    else:
        make = getattr(served, "decoding_step", None)
        cached = make() if make is not None else None
    if cached is not None:
        return cached

    def step(current: torch.Tensor) -> torch.Tensor:
        return model.logits(current)[:, -1]
    return step


@torch.no_grad()
def sample(model, ids: torch.Tensor, n_tokens: int, *, greedy: bool = False, top_k: int | None = None,
           generator: torch.Generator | None = None, ban: Sequence[int] = (), stop_at: int | None = None,
           step: Step | None = None) -> torch.Tensor:
    """`ids` [batch, pos] followed by up to `n_tokens` chosen tokens: [batch, pos + n]."""
    step = step or default_step(model)
    banned = [int(t) for t in ban]
    for _ in range(n_tokens):
        logits = step(ids).float()
        if banned:
            logits[:, banned] = float("-inf")
        if greedy:
            nxt = logits.argmax(dim=-1, keepdim=True)
        elif top_k is not None:
            values, index = logits.topk(min(top_k, logits.shape[-1]), dim=-1)
            probs = torch.softmax(values, dim=-1)
            choice = torch.multinomial(probs.cpu(), 1, generator=generator).to(index.device)
            nxt = index.gather(1, choice)
        else:
            probs = torch.softmax(logits, dim=-1).cpu()
            nxt = torch.multinomial(probs, 1, generator=generator)
        ids = torch.cat([ids, nxt.to(ids.device)], dim=1)
        if stop_at is not None and bool((nxt == stop_at).all()):
            break
    return ids
