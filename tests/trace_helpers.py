"""Helpers of the causal-tracing tests: tiny random Llamas with a sharp output distribution."""

from __future__ import annotations

from pathlib import Path

import torch

from kelocate.loading import load_model
from kelocate.model import HookedModel
from kelocate.testing.random_model import build_random_llama


def sharp_model_dir(root: Path, n_layers: int = 4, seed: int = 3, kv_heads: int = 4) -> Path:
    """Write a d64 random Llama (optionally with grouped-query attention) and return its folder."""
    path = build_random_llama(
        root / f"tiny{n_layers}_{seed}_{kv_heads}",
        n_layers=n_layers,
        d_model=64,
        d_mlp=128,
        n_heads=4,
        seed=seed,
    )
    if kv_heads != 4:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig.from_pretrained(path)
        config.num_key_value_heads = kv_heads
        torch.manual_seed(seed)
        LlamaForCausalLM(config).eval().save_pretrained(path)
    return path


def sharpen(model: HookedModel) -> HookedModel:
    """Scale the LM head and the residual writes so corruption and restoration matter a lot."""
    with torch.no_grad():
        model.hf.lm_head.weight.mul_(40.0)
        for layer in model.hf.model.layers:
            layer.self_attn.o_proj.weight.mul_(4.0)
            layer.mlp.down_proj.weight.mul_(4.0)
    return model


def sharp_tiny_model(root: Path, n_layers: int = 4, seed: int = 3, kv_heads: int = 4) -> HookedModel:
    """A loaded, sharpened tiny random Llama."""
    return sharpen(load_model(sharp_model_dir(root, n_layers, seed, kv_heads)))
