"""Random-weight Llama models with their own small tokenizer, saved in Hugging Face format.

Used by the tests (a real local model path without any download) and by the benchmarks
(a GPT-2-small-sized Llama). Deterministic for a given seed.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("the of and in was is a to for by created language Japan Japanese SMAP group city river "
         "France Paris Berlin Germany German capital born works plays music team located speaks").split()


def build_random_llama(out_dir: str | Path, n_layers: int = 2, d_model: int = 64, d_mlp: int = 128,
                       n_heads: int = 4, vocab_size: int = 200, seed: int = 0,
                       tokenizer_texts: list[str] | None = None, n_kv_heads: int | None = None) -> Path:
    """Write a random LlamaForCausalLM + tokenizer to `out_dir` and return the path (`n_kv_heads` < `n_heads`:
    grouped-query attention, as SmolLM2's)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from kelocate.organism.tokenizer import BOS_ID, EOS_ID, PAD_ID, train_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    texts = list(tokenizer_texts or [])
    for _ in range(400):
        idx = torch.randint(len(WORDS), (8,), generator=g).tolist()
        texts.append(" ".join(WORDS[i] for i in idx))
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=d_mlp,
                         num_hidden_layers=n_layers, num_attention_heads=n_heads,
                         num_key_value_heads=n_kv_heads or n_heads,
                         max_position_embeddings=256, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                         pad_token_id=PAD_ID, tie_word_embeddings=False, rms_norm_eps=1e-5)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
