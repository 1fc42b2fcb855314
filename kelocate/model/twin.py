"""A plain Hugging Face model around the bridge's own weight tensors, for libraries and editors that need
an ordinary `PreTrainedModel` (peft cannot wrap the bridge, which registers each linear under two names):
adapter training wraps it, a counterfactual model is one with some layers replaced, and
`save_model` writes it, so that an edited copy holds exactly the tensors of the plain HF model.

Why not the bridge's own state dict: the bridge registers every weight again under its alias names
(`ln1`, `mlp.in`, `attn.q`, `self_attn.q`, ...) and gives the LM head a zero `bias` buffer the model does not
have; saving that wrote 160 tensors for the organism's 57, and transformers reported the extras as
unexpected keys when loading the copy. The twin shares the bridge's tensors, so saving it copies nothing in
memory and writes what `save_pretrained` of the original model wrote: HF's names, shapes and dtypes, tied
weights once.
"""

from __future__ import annotations

import os

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


def save_model(model, folder: str | os.PathLike) -> None:
    """Write the (edited) model as a plain Hugging Face folder: config, generation config, weights
    (`save_pretrained`, safetensors) and tokenizer, loadable by `kelocate.load_model(folder)` and by
    transformers with no unexpected or missing key."""
    twin = plain_twin(model)
    if getattr(model.hf, "generation_config", None) is not None:
        twin.generation_config = model.hf.generation_config  # the loaded one, not one made from the config
    twin.save_pretrained(folder, safe_serialization=True)
    model.tokenizer.save_pretrained(folder)
