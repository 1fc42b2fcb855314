"""Train a small `LlamaForCausalLM` on the world's text: a plain, seeded, CPU training loop.

Settings follow DESIGN.md section 3 (AdamW lr 2e-3, weight decay 0.1, batch 128). Every sequence is
`<s> text </s>`; the loss is next-token cross-entropy on every real token. Batches group sequences of
similar length (less padding) and are drawn from a seeded generator, so a run is reproducible on the
same machine and thread count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class TrainConfig:
    """Architecture and optimisation settings of the organism."""

    n_layers: int = 6
    d_model: int = 192
    d_mlp: int = 768
    n_heads: int = 6
    max_positions: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    batch_size: int = 128
    epochs: int = 16
    warmup_steps: int = 40
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0

    @classmethod
    def mini(cls, epochs: int = 30) -> TrainConfig:
        """A model small enough to train in seconds (tests)."""
        return cls(
            n_layers=2,
            d_model=64,
            d_mlp=256,
            n_heads=4,
            batch_size=32,
            epochs=epochs,
            warmup_steps=5,
            lr=3e-3,
        )

    def to_json(self) -> dict:
        return asdict(self)


def make_model(config: TrainConfig, tokenizer):
    """A freshly initialised LlamaForCausalLM for `tokenizer` (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.d_model,
        intermediate_size=config.d_mlp,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_heads,
        max_position_embeddings=config.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(config.seed)
    return LlamaForCausalLM(cfg)


def encode_texts(tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """Token ids `<s> text </s>` of each text (BOS from the tokenizer's post-processor)."""
    eos = tokenizer.eos_token_id
    seqs = [ids + [eos] for ids in tokenizer(texts)["input_ids"]]
    too_long = [len(s) for s in seqs if len(s) > max_len]
    if too_long:
        raise ValueError(f"{len(too_long)} training sequences exceed {max_len} tokens (max {max(too_long)})")
    return seqs


def batches(seqs: list[list[int]], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Indices of one epoch's batches: shuffled, then grouped by length within windows of 8 batches."""
    order = torch.randperm(len(seqs), generator=generator).tolist()
    window = batch_size * 8
    out = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(seqs[i]))
        out += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    perm = torch.randperm(len(out), generator=generator).tolist()
    return [out[i] for i in perm]


def collate(
    seqs: list[list[int]], idx: list[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and labels (-100 on padding)."""
    width = max(len(seqs[i]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, i in enumerate(idx):
        ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
        mask[row, : len(seqs[i])] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio` x lr."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.lr * (
        config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    )


def _optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
    )


def train(
    model,
    seqs: list[list[int]],
    pad_id: int,
    config: TrainConfig,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> list[float]:
    """Train `model` in place for `config.epochs` epochs; return the mean loss of each epoch.

    `on_epoch(epoch, mean_loss, seconds_so_far)` is called after every epoch (progress, probes).
    """
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    opt = _optimizer(model, config)
    steps_per_epoch = math.ceil(len(seqs) / config.batch_size)
    total = steps_per_epoch * config.epochs
    step, history, start = 0, [], time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        losses = []
        for idx in batches(seqs, config.batch_size, generator):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, config)
            ids, mask, labels = collate(seqs, idx, pad_id)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        history.append(sum(losses) / len(losses))
        if on_epoch is not None:
            on_epoch(epoch + 1, history[-1], time.perf_counter() - start)
    model.eval()
    return history
