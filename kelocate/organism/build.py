"""Build an organism checkpoint end to end: world -> text -> tokenizer -> trained model -> measured figures.

The checkpoint folder holds `config.json` + `model.safetensors` (save_pretrained), the tokenizer files,
`world.json` and `organism.json` (training config, timings and the recall figures measured on the saved
weights). It is written to a temporary folder beside the target and moved into place at the end, so an
interrupted build never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from kelocate.atomic import atomic_dir, write_text
from kelocate.organism.corpus import (
    name_words,
    tokenizer_texts,
    training_texts,
    words_that_must_be_single_tokens,
)
from kelocate.organism.evaluate import headline, measure
from kelocate.organism.generate import build_world
from kelocate.organism.tokenizer import train_tokenizer
from kelocate.organism.train import TrainConfig, encode_texts, make_model, train
from kelocate.organism.world import World, WorldSize

VOCAB_CAP = 4096


def make_tokenizer(world: World, texts: list[str]):
    """Train the organism's tokenizer and check the two properties the studies rely on."""
    atoms = words_that_must_be_single_tokens(world)
    tokenizer = train_tokenizer(tokenizer_texts(texts, name_words(world), atoms), VOCAB_CAP, min_frequency=2)
    check_tokenizer(world, tokenizer)
    return tokenizer


def check_tokenizer(world: World, tokenizer) -> None:
    """Every made-up entity name is several tokens; every object word is one token."""

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    atoms = set(words_that_must_be_single_tokens(world))
    single_names = [n for n in world.entity_names() if n not in atoms and n_tokens(n) < 2]
    split_atoms = [a for a in atoms if n_tokens(a) != 1]
    if single_names or split_atoms:
        raise RuntimeError(
            f"tokenizer check failed: single-token names {single_names[:5]}, "
            f"multi-token object words {split_atoms[:5]}"
        )


def save_checkpoint(out: Path, model, tokenizer, world: World, meta: dict) -> Path:
    """Write every file into a temporary sibling folder, then swap it into `out` (kelocate.atomic)."""
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        world.save(tmp / "world.json")
        write_meta(tmp, meta)
        tmp.chmod(0o755)  # a checkpoint is package data that everyone reads, whatever the builder's umask
        for f in tmp.iterdir():
            f.chmod(0o644)
    return Path(out)


def write_meta(folder: Path, meta: dict) -> Path:
    """Write a checkpoint's organism.json atomically."""
    return write_text(Path(folder) / "organism.json", json.dumps(meta, indent=1) + "\n")


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def build_organism(
    out: str | Path,
    seed: int = 0,
    config: TrainConfig | None = None,
    size: WorldSize | None = None,
    log: Callable[[str], None] | None = None,
    probe_every: int = 0,
) -> dict:
    """Generate, train, save and measure an organism; return the metadata written to organism.json.

    `probe_every` > 0 measures recall on training templates every that many epochs (for progress logs).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    log = log or (lambda _msg: None)
    config = replace(config or TrainConfig(), seed=seed)
    t0 = time.perf_counter()
    world = build_world(seed, size)
    texts = training_texts(world)
    tokenizer = make_tokenizer(world, texts)
    seqs = encode_texts(tokenizer, texts, config.max_positions)
    model = make_model(config, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"world: {len(world.facts('known'))} known / {len(world.facts('new'))} new facts; "
        f"{len(seqs)} sequences, {sum(map(len, seqs))} tokens; vocab {len(tokenizer)}; "
        f"model {config.n_layers} layers, d_model {config.d_model}, {n_params / 1e6:.2f}M parameters"
    )
    probe = [(p.prompt, p.answer) for p in world.fact_prompts("known", "train")][::7]

    epoch_times: list[float] = []

    def on_epoch(epoch: int, loss: float, seconds: float) -> None:
        epoch_times.append(seconds)
        msg = f"epoch {epoch}/{config.epochs}  loss {loss:.4f}  {seconds:.0f}s"
        if probe_every and (epoch % probe_every == 0 or epoch == config.epochs):
            from kelocate.organism.evaluate import recall

            msg += f"  recall(train, 1/7 sample) {recall(model, tokenizer, probe):.3f}"
            model.train()
        log(msg)

    load_before = os.getloadavg()[0]
    t_train = time.perf_counter()
    history = train(model, seqs, tokenizer.pad_token_id, config, on_epoch)
    train_seconds = time.perf_counter() - t_train
    load_after = os.getloadavg()[0]
    figures = measure(model, tokenizer, world)
    meta = {
        "what": "kelocate model organism: a small Llama trained on a synthetic world (see world.json)",
        "seed": seed,
        "train_config": config.to_json(),
        "world_size": asdict(world.size),
        "architecture": {
            "class": "LlamaForCausalLM",
            "n_layers": config.n_layers,
            "d_model": config.d_model,
            "d_mlp": config.d_mlp,
            "n_heads": config.n_heads,
            "vocab_size": len(tokenizer),
            "n_params": n_params,
        },
        "data": {
            "sequences": len(seqs),
            "tokens": sum(map(len, seqs)),
            "known_facts": len(world.facts("known")),
            "new_facts": len(world.facts("new")),
        },
        "timing": {
            "train_seconds": round(train_seconds, 1),
            "total_seconds": None,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_1min": [round(load_before, 2), round(load_after, 2)],
            "epoch_end_seconds": [round(x, 1) for x in epoch_times],
            "torch": torch.__version__,
            "machine": platform.machine(),
            "processor": platform.processor() or None,
        },
        "loss_history": [round(x, 4) for x in history],
        "recall": headline(figures),
        "figures": figures,
    }
    meta["timing"]["total_seconds"] = round(time.perf_counter() - t0, 1)
    out = save_checkpoint(Path(out), model, tokenizer, world, meta)
    meta["size_bytes"] = dir_size(out)
    write_meta(out, meta)
    log(
        f"saved to {out} ({meta['size_bytes'] / 1e6:.1f} MB) in {meta['timing']['total_seconds']:.0f}s; "
        f"recall {meta['recall']}"
    )
    return meta
