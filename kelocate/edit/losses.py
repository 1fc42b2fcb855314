"""The edit losses and the batches they read, shared by the editors that train on an edit (FT-L, FT-M,
AdaLoRA) and by the trained editors (MEND, SERAC).

Two objectives, as in EasyEdit:

- `last_token_loss` (FT-L, EasyEdit's "prompt_last"): the prompt alone is fed; at its LAST token the
  log-probabilities of every target token are gathered and averaged (a bag-of-tokens loss at one
  position), per example, then over examples.
- `masked_target_loss` (FT-M, EasyEdit's "target_new"; also AdaLoRA's, MEND's edit loss and SERAC's
  counterfactual model's): prompt + target are fed; cross-entropy over the target tokens only (prompt and
  padding positions masked), averaged over each example's target tokens, then over examples.

Their inputs: `prompt_batch` (FT-L's prompts, last positions and padded target ids) and
`prompt_target_batch` / `answer_batch` / `id_batch` (right-padded context + target rows with the mask of the
target tokens). Both losses compute in float32 whatever the model's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kelocate.edit.request import EditRequest
from kelocate.model.tokens import pad_batch


# ---------------------------------------------------------------------- the two objectives
def last_token_loss(logits: torch.Tensor, last: torch.Tensor, targets: torch.Tensor,
                    target_mask: torch.Tensor) -> torch.Tensor:
    """FT-L: mean over examples of -mean_j log p(targets[b, j]) at position last[b].

    logits [B, T, V]; last [B] (the last prompt token of each row); targets [B, J] padded target ids;
    target_mask [B, J] (True for real target tokens)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    logp = torch.log_softmax(logits[rows, last].float(), dim=-1)
    picked = logp.gather(1, targets)
    mask = target_mask.to(picked.dtype)
    return (-(picked * mask).sum(1) / mask.sum(1)).mean()


def masked_target_loss(logits: torch.Tensor, ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """FT-M: mean over examples of the cross-entropy of the tokens where target_mask is True.

    logits [B, T, V] of ids [B, T]; target_mask [B, T] marks target tokens (never the first position): the
    logits at t - 1 predict the token at t. Prompt and padding positions contribute nothing."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(2, ids[:, 1:, None])[..., 0]
    mask = target_mask[:, 1:].to(nll.dtype)
    return ((nll * mask).sum(1) / mask.sum(1)).mean()


# ---------------------------------------------------------------------- inputs
def prompt_batch(model, requests: Sequence[EditRequest], standalone: bool = False) -> dict[str, torch.Tensor]:
    """FT-L's inputs: right-padded prompts, their last positions and the padded target ids: the target's tokens
    as they continue the prompt, or (`standalone`, as EasyEdit's FT-L takes them) `" " + target` tokenised on
    its own with the tokenizer's special tokens, so a BOS (and, on Llama-2, a lone space piece) is in the bag."""
    from kelocate.model.tokens import encode

    prompts = [model.encode(r.prompt).ids.tolist() for r in requests]
    targets = [encode(model.tokenizer, " " + r.target_new).ids.tolist() if standalone
               else list(model.answer_ids(r.prompt, r.target_new)) for r in requests]
    ids, mask = pad_batch(prompts, model.pad_id)
    tids, tmask = pad_batch(targets, 0)
    device = model.device
    return {"ids": ids.to(device), "mask": mask.to(device), "last": torch.tensor([len(p) - 1 for p in prompts],
                                                                                 device=device),
            "targets": tids.to(device), "target_mask": tmask.bool().to(device)}


def prompt_target_batch(model, requests: Sequence[EditRequest]) -> dict[str, torch.Tensor]:
    """FT-M's inputs: right-padded prompt + target rows, attention mask and the target-token mask."""
    return answer_batch(model, [(r.prompt, r.target_new) for r in requests])


def answer_batch(model, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """`prompt_target_batch` for (prompt, answer) pairs."""
    rows = [(model.encode(p).ids.tolist(), list(model.answer_ids(p, a))) for p, a in pairs]
    return id_batch(rows, model.pad_id, model.device)


def id_batch(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded (context ids + target ids) rows: ids, attention mask and the target-token mask."""
    ids, mask = pad_batch([list(c) + list(t) for c, t in rows], pad_id)
    target_mask = torch.zeros_like(mask, dtype=torch.bool)
    for i, (context, target) in enumerate(rows):
        target_mask[i, len(context):len(context) + len(target)] = True
    return {"ids": ids.to(device), "mask": mask.to(device), "target_mask": target_mask.to(device)}
