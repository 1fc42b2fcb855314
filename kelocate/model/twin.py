"""A plain Hugging Face model around the bridge's own weight tensors, for libraries and editors that need
an ordinary `PreTrainedModel` (peft cannot wrap the bridge, which registers each linear under two names):
AdaLoRA trains adapters on it, SERAC's counterfactual model is one with some layers replaced."""

from __future__ import annotations

import torch

from kelocate.errors import KelocateError
from kelocate.model.weights import canonical


def plain_twin(model):
    """A plain HF model of the bridge's class whose parameters ARE the bridge's tensors (shared, not copied)."""
    config = model.hf.config
    with torch.device("meta"):
        twin = type(model.hf)(config)
    shared = {canonical(name): p for name, p in model.hf.named_parameters()}
    twin.load_state_dict(shared, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        twin.lm_head.weight = twin.model.embed_tokens.weight
    rotary = twin.model.rotary_emb  # non-persistent buffers: rebuilt on the model's device
    with torch.device(model.device):
        twin.model.rotary_emb = type(rotary)(config=config)
    missing = [n for n, t in [*twin.named_parameters(), *twin.named_buffers()] if t.is_meta]
    if missing:
        raise KelocateError(f"could not share the weight {missing[0]!r} with the bridge; this model's layout is "
                            "not supported")
    return twin.eval()
