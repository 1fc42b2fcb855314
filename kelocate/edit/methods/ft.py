"""Constrained fine-tuning baselines (as in EasyEdit): FT-L and FT-M.

Both fine-tune only `down_proj.weight` of the chosen layer(s) with Adam (`lr`, `steps`, `weight_decay`),
on all requests together, and stop early once the loss falls below `loss_stop` (1e-2). They differ in the
objective:

- FT-L (EasyEdit's "prompt_last"): the prompt alone is fed; at its LAST token the log-probabilities of
  every target token are gathered and averaged (a bag-of-tokens loss at one position), per example. Which
  tokens: `target_tokens = "in_context"` (kelocate's choice: the answer's own tokens as they continue the
  prompt) or `"standalone"` (EasyEdit's on Llama: `" " + target` tokenised alone, BOS included, so the bag
  also raises log p(BOS) at the prompt's end; measured on the organism in docs/methods.md).
- FT-M (EasyEdit's "target_new"): prompt + target are fed; cross-entropy over the target tokens only
  (prompt positions masked), averaged over each example's target tokens, then over examples.

`norm_constraint` (a float; false or 0 turns it off) clamps every weight after each step to
[W0 - eps, W0 + eps] around its value before the edit. Adam updates a float32 copy of the weights (the
model's own dtype may be half precision), which is written into the model after every step. The losses and
their batches are the machinery's (`kelocate.edit.losses`), shared with AdaLoRA, MEND and SERAC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from kelocate.edit.base import Editor
from kelocate.edit.losses import last_token_loss, masked_target_loss, prompt_batch, prompt_target_batch
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError
from kelocate.model import weights
from kelocate.model.scoring import forward_with_grad, grad_on
from kelocate.timing import timed


# ---------------------------------------------------------------------- the editors
class _FineTune(Editor):
    """Fine-tune `down_proj.weight` of the given layers on the requests (FT-L and FT-M differ in the loss)."""

    batch = True
    objective: ClassVar[str]

    def _check(self, model, requests, layers, hp) -> None:
        if int(hp["steps"]) < 1:
            raise KelocateError(f"{self.method} needs steps >= 1, got {hp['steps']}")
        if not float(hp["lr"]) > 0:
            raise KelocateError(f"{self.method} needs a positive learning rate, got lr={hp['lr']}")
        if hp.get("target_tokens", "in_context") not in ("in_context", "standalone"):
            raise KelocateError(f"unknown target_tokens {hp['target_tokens']!r}; use in_context or standalone")
        eps = hp.get("norm_constraint")
        if eps is not False and eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float))
                                                     or eps < 0):
            raise KelocateError(f"norm_constraint must be a non-negative number or false, got {eps!r}")

    def inputs(self, model, requests: Sequence[EditRequest], hp: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @timed("training")
    def _edit(self, model, requests: list[EditRequest], layers: list[int], hp: dict[str, Any]) -> dict[str, Any]:
        batch = self.inputs(model, requests, hp)
        params = [weights.mlp_out(model, layer) for layer in layers]
        originals = [p.detach().clone() for p in params]
        masters = [p.detach().float().clone() for p in params]  # Adam works on float32 copies
        optimiser = torch.optim.Adam(masters, lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]))
        eps = hp.get("norm_constraint")
        eps = float(eps) if eps not in (None, False) and float(eps) > 0 else None
        stop = float(hp.get("loss_stop", 1e-2))
        losses: list[float] = []
        try:
            with grad_on(model, params):
                for _ in range(int(hp["steps"])):
                    for p in params:
                        p.grad = None
                    loss = self.loss(forward_with_grad(model, batch["ids"], batch["mask"]), batch)
                    losses.append(float(loss.detach()))
                    if losses[-1] < stop:
                        break
                    loss.backward()
                    for p, m in zip(params, masters, strict=True):
                        m.grad = p.grad.detach().float()
                    optimiser.step()
                    with torch.no_grad():
                        for p, m, w0 in zip(params, masters, originals, strict=True):
                            if eps is not None:
                                lo, hi = w0.float() - eps, w0.float() + eps
                                torch.clamp(m, min=lo, max=hi, out=m)
                            p.copy_(m.to(p.dtype))
        finally:
            for p in params:
                p.grad = None
        final = float(self.loss(model.logits(batch["ids"], batch["mask"]), batch))
        max_delta = max(float((p.detach().float() - w0.float()).abs().max()) for p, w0 in
                        zip(params, originals, strict=True))
        return {"objective": self.objective, "losses": [round(v, 6) for v in losses], "steps": len(losses),
                "final_loss": round(final, 6), "max_abs_delta": max_delta}


class FTL(_FineTune):
    """FT-L: constrained fine-tuning of one layer's MLP values on the last prompt token."""

    method = "ft-l"
    objective = "prompt_last"

    def inputs(self, model, requests, hp):
        return prompt_batch(model, requests, standalone=hp.get("target_tokens", "in_context") == "standalone")

    def loss(self, logits, batch):
        return last_token_loss(logits, batch["last"], batch["targets"], batch["target_mask"])


class FTM(_FineTune):
    """FT-M: fine-tuning of the same weights with cross-entropy masked to the target tokens."""

    method = "ft-m"
    objective = "target_new"

    def inputs(self, model, requests, hp):
        return prompt_target_batch(model, requests)

    def loss(self, logits, batch):
        return masked_target_loss(logits, batch["ids"], batch["target_mask"])
