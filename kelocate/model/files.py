"""A model's files on this machine, and reading them with transformers: the lowest step of loading.

`Source` says where the files are (a Hugging Face folder, a cached hub snapshot, a GGUF file); `load_hf`
reads a tokenizer and a causal LM from one, local files only (`hub_offline`). Both the loader
(`load.py`, which also finds the files: `resolve_source`) and the fetcher of known models (`fetch.py`, which
converts a GGUF file once) stand on this module, so imports go one way: load -> fetch -> files.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kelocate.errors import KelocateError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float64": torch.float64}


@dataclass(frozen=True)
class Source:
    """Where a model's files are: kind 'dir' | 'hub' | 'gguf', the local path, and facts for results."""

    kind: str
    path: Path
    display: str
    facts: dict[str, Any] = field(default_factory=dict)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """A dtype from its name ('bf16', 'float32', ...); None is float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise KelocateError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(DTYPES))}")
    return DTYPES[dtype]


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Make every Hugging Face lookup local-only for a while (nothing is downloaded at run time)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _gguf_ready() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise KelocateError("loading a GGUF file needs the gguf package; install it with pip install 'kelocate[gguf]'")


@contextlib.contextmanager
def _quiet_gguf() -> Iterator[None]:
    """Silence the per-tensor progress bar transformers draws while dequantising a GGUF file (it ignores
    `disable_progress_bar`); kelocate's own commands say what is happening instead."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - an older transformers without GGUF support
        yield
        return
    original = gguf_utils.tqdm
    gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def unmark_gguf(hf_model) -> None:
    """Drop the GGUF-quantised marking transformers leaves on a dequantised model, so it can be saved."""
    hf_model.hf_quantizer = None
    for obj in (hf_model, hf_model.config):
        for attr in ("quantization_config", "is_quantized", "quantization_method"):
            if attr in vars(obj):
                delattr(obj, attr)


def load_hf(src: Source, dtype: torch.dtype, device: str, device_map: str | dict | None):
    """(tokenizer, HF causal LM) from a resolved source, local files only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    where, extra = str(src.path), {}
    if src.kind == "gguf":
        _gguf_ready()
        where, extra = str(src.path.parent), {"gguf_file": src.path.name}
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype, **extra}
    if device_map is not None:
        kwargs["device_map"] = device_map
    with hub_offline(), _quiet_gguf():
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
        hf_model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    if src.kind == "gguf":
        unmark_gguf(hf_model)
        hf_model.to(dtype)
    if device_map is None:
        hf_model.to(device)
    return tokenizer, hf_model.eval()
