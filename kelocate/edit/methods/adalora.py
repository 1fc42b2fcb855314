"""AdaLoRA (Zhang et al. 2023) through `peft`: low-rank adapters whose rank budget is reallocated during
training, trained on the edit with FT-M's masked cross-entropy on the target tokens.

peft cannot wrap the bridge itself (TransformerLens registers each linear layer under two names), so the
adapters go on a plain HF model of the same class built around the *same* weight tensors (no copy): q/v
projections by default, `modules` may name the MLP's too; peft freezes everything else. After training the
adapters are merged into their base weights, which are the bridge's, and the plain model is dropped, so
the bridge never sees an adapter module. The record holds the merged weights' before/after values (revert
is bit-exact) and the trained adapter tensors (`record.attachments`, saved with it).

Two ways to run it, chosen by the profile (hp):
- kelocate's (organism, SmolLM2, generic): AdaLoRA as its paper means it, the rank budget reallocated every
  step (`allocate = true`: peft's `update_and_allocate`, 12 -> 8 over the steps), stopping once the loss is
  below `loss_stop`;
- the reference run's (`llama-2-7b`, the values EasyEdit's KnowEdit scripts use): no allocation call (a
  fixed rank-12 SVD-shaped adapter), every step run (`loss_stop = 0`), and peft's orthogonality regulariser
  in the loss (`orth_reg_weight = 0.5`, the weight of ||A A^T - I|| and ||B^T B - I||, as peft's forward adds
  it when it computes the loss itself), and its dropout of 0.1 on the adapters' input (active: peft builds
  its dropout modules in training mode even around a model in eval mode, in the reference's run too).
One difference stays: peft >= 0.12 starts the singular values E at zero (the adapter is a no-op before the
first step), where the peft 0.7.1 of the published numbers drew them at random.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from kelocate.edit.base import Editor
from kelocate.edit.losses import masked_target_loss, prompt_target_batch
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError
from kelocate.model.twin import plain_twin
from kelocate.timing import timed

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_WHERE = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
          "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def target_pattern(modules: Sequence[str], layers: Sequence[int]) -> str:
    """peft's target regex: `modules` of the chosen layers of a plain HF Llama."""
    return rf"model\.layers\.({'|'.join(str(layer) for layer in layers)})\.(self_attn|mlp)\.({'|'.join(modules)})$"


class AdaLoRA(Editor):
    """AdaLoRA adapters trained on the edit, merged into the base weights."""

    method = "adalora"
    batch = True

    def parameters(self, model, layers: Sequence[int], hp: dict[str, Any]) -> list[str]:
        return [f"model.layers.{layer}.{_WHERE[m]}.{m}.weight" for layer in layers for m in hp["modules"]]

    def _check(self, model, requests, layers, hp) -> None:
        unknown = [m for m in hp["modules"] if m not in MODULES]
        if unknown or not hp["modules"]:
            raise KelocateError(f"unknown adalora module {unknown[0] if unknown else '(none)'!r}; use some of "
                                f"{', '.join(MODULES)}")

    @timed("training")
    def _edit(self, model, requests: list[EditRequest], layers: list[int], hp: dict[str, Any]) -> dict[str, Any]:
        from peft import AdaLoraConfig, AdaLoraModel

        steps = int(hp["steps"])
        allocate, orth = bool(hp.get("allocate", True)), float(hp.get("orth_reg_weight", 0.0))
        config = AdaLoraConfig(
            init_r=int(hp["init_r"]), target_r=int(hp["target_r"]), lora_alpha=int(hp["lora_alpha"]),
            lora_dropout=float(hp.get("dropout", 0.0)), tinit=int(hp["tinit"]), tfinal=int(hp["tfinal"]),
            deltaT=int(hp["delta_t"]), total_step=steps, target_modules=target_pattern(hp["modules"], layers),
            bias="none")
        flags = {name: p.requires_grad for name, p in model.hf.named_parameters()}
        batch = prompt_target_batch(model, requests)
        twin = plain_twin(model)
        torch.manual_seed(int(hp.get("seed", 0)))  # adapters start from seeded random factors
        wrapped = AdaLoraModel(twin, config, "default")
        losses: list[float] = []
        try:
            trainable = [p for p in wrapped.parameters() if p.requires_grad]
            optimiser = torch.optim.Adam(trainable, lr=float(hp["lr"]))
            with torch.enable_grad():
                for step in range(steps):
                    optimiser.zero_grad()
                    logits = wrapped(input_ids=batch["ids"], attention_mask=batch["mask"]).logits
                    loss = masked_target_loss(logits, batch["ids"], batch["target_mask"])
                    if orth:
                        loss = loss + orth * orthogonality_penalty(wrapped)
                    losses.append(float(loss.detach()))
                    if losses[-1] < float(hp["loss_stop"]):
                        break
                    loss.backward()
                    optimiser.step()
                    if allocate:
                        wrapped.update_and_allocate(step)  # AdaLoRA's rank budget schedule
            adapter = {name: p.detach().cpu().clone() for name, p in wrapped.named_parameters()
                       if "lora_" in name}
        finally:
            wrapped.merge_and_unload()  # adapters folded into the base weights, which the bridge shares
            for name, p in model.hf.named_parameters():
                p.requires_grad_(flags.get(name, p.requires_grad))
        return {"losses": [round(v, 6) for v in losses], "steps": len(losses), "attachments": adapter,
                "target_modules": list(hp["modules"]), "allocated": allocate}


def orthogonality_penalty(wrapped) -> torch.Tensor:
    """AdaLoRA's orthogonality regulariser as peft's forward adds it to a loss it computes: the mean, over the
    trainable adapters' A and B factors, of ||A A^T - I||_F and ||B^T B - I||_F."""
    terms = []
    for name, p in wrapped.named_parameters():
        if p.requires_grad and ("lora_A" in name or "lora_B" in name):
            gram = p @ p.T if "lora_A" in name else p.T @ p
            eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
            terms.append(torch.linalg.matrix_norm(gram - eye))
    return torch.stack(terms).mean() if terms else torch.zeros(())
