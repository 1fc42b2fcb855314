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

import functools
import inspect
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


# ---------------------------------------------------------------------- the twin as the plain forward
def trusted_twin(model):
    """The plain HF twin to run in place of the bridge, or None where the bridge must run.

    The bridge costs 5-35% per forward over the same HF maths (measured on SmolLM2, 2 threads) and, worse,
    breaks HF's key/value cache; the twin has neither problem. It may stand in only where nothing differs: no
    hook attached anywhere on the bridge (`sites.bridge_has_hooks`: a user's patch must apply), the twin still
    holding the bridge's very tensors (an edit in place is seen by both; a replaced parameter is not), and,
    once per model, the twin's logits on a probe text equal the bridge's to `stack.stack_tolerance`.
    """
    from kelocate.model.sites import bridge_has_hooks
    from kelocate.model.stack import plain_paths_asked

    if plain_paths_asked() or bridge_has_hooks(model.bridge):
        return None
    params = tuple(p.data_ptr() for p in model.hf.parameters())
    kept = getattr(model, "_twin", None)
    if kept is None or kept[1] != params:
        twin = plain_twin(model)
        kept = (twin, params, _equivalent(model, twin))
        model._twin = kept
    return kept[0] if kept[2] else None


def _equivalent(model, twin) -> bool:
    """Whether the twin's logits equal the bridge's on the block runner's probe text, to its tolerance."""
    from kelocate.model.stack import probe_gap

    diff, tol = probe_gap(model, lambda ids: twin(ids, use_cache=False).logits)
    return diff <= tol


def decoding_step(model):
    """A next-token step for `sampling.sample` that decodes with HF's key/value cache on the trusted twin:
    the first call runs the whole ids, each later call (the same rows, one token longer) only the new token.
    None where the twin may not stand in for the bridge (`trusted_twin`)."""
    twin = trusted_twin(model)
    if twin is None:
        return None
    state: dict = {"cache": None, "length": 0}

    def step(ids: torch.Tensor) -> torch.Tensor:
        if state["cache"] is not None and ids.shape[1] == state["length"] + 1:
            out = twin(ids[:, -1:], use_cache=True, logits_to_keep=1, **cache_kwargs(twin, state["cache"]))
        else:
            out = twin(ids, use_cache=True, logits_to_keep=1)
        state["cache"], state["length"] = returned_cache(out), ids.shape[1]
        return out.logits[:, -1]
    return step


def cache_kwargs(hf_model, cache) -> dict:
    """`cache` as the keyword this transformers version's forward takes it (`cache`; `past_key_values` before
    the rename), or nothing when there is none yet."""
    return {} if cache is None else {_cache_keyword(type(hf_model)): cache}


@functools.cache
def _cache_keyword(model_class: type) -> str:
    """The cache keyword of a model class's forward, read once per class (not on every decoded token)."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def returned_cache(out):
    """The key/value cache an HF forward returned (`cache`; `past_key_values` before the rename)."""
    return out.cache if hasattr(out, "cache") else out.past_key_values
