"""Load a hooked model from what a user has locally: a Hugging Face directory, a hub id already in the local
Hugging Face cache (`owner/name` included), a GGUF file, or a name `kelocate models fetch` made local.

Nothing is downloaded at run time: every Hugging Face lookup is local-only while a model loads. A GGUF file
loads through transformers' `gguf_file` support (weights dequantised to float; the `gguf` package is the
optional extra `kelocate[gguf]`), and the GGUF marking is removed so the model can be saved and edited like
any other.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kelocate.errors import KelocateError
from kelocate.model.hooked import HookedModel

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float64": torch.float64}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


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


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub id in the Hugging Face cache, or None when it is not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        with hub_offline():
            path = Path(snapshot_download(repo_id=repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        return None
    return path if (path / "config.json").is_file() else None


def resolve_source(source: str | os.PathLike) -> Source:
    """Find a model's files locally; raise a one-line error naming the fix when they are not there."""
    from kelocate.model.fetch import KNOWN_MODELS, known_model_dir

    text = str(source).strip()
    if not text:
        raise KelocateError("the model name is empty; pass a folder, a .gguf file or a cached hub id (--model)")
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return Source("gguf", path.resolve(), text, {"file": path.name, "file_size": path.stat().st_size})
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise KelocateError(
                f"{text!r} is not a Hugging Face model directory (no config.json) nor a .gguf file; pass a folder "
                "written by save_pretrained or a GGUF file")
        return Source("dir", path.resolve(), text)
    if text.lower().endswith(".gguf"):
        raise KelocateError(f"GGUF file {text!r} does not exist; check the path")
    if text in KNOWN_MODELS:
        return Source("dir", known_model_dir(text), text, {"known_model": text})
    if _HUB_ID.match(text):
        snap = _hub_snapshot(text)
        if snap is not None:
            return Source("hub", snap, text, {"hub_id": text, "revision": snap.name})
    known = ", ".join(KNOWN_MODELS)
    raise KelocateError(
        f"model {text!r} is neither a local directory, a .gguf file, a fetched model ({known}) nor in the local "
        "Hugging Face cache; pass a local path (--model DIR) or fetch it first (kelocate models fetch NAME)")


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


def load_model(source: str | os.PathLike, dtype: str | torch.dtype | None = None, device: str | None = None,
               device_map: str | dict | None = None, entity_names: Sequence[str] | None = None) -> HookedModel:
    """Load a hooked model from a local folder, a .gguf file, a fetched name or a cached hub id.

    dtype: 'float32' (default), 'bf16', 'fp16', ...; device: 'cpu' (default), 'cuda', ...; device_map: passed
    to transformers (e.g. 'auto' to spread a big model over GPUs; needs accelerate); entity_names: known
    subjects (used by subject inference and the noise scale).
    """
    src = resolve_source(source)
    torch_dtype = resolve_dtype(dtype)
    device = device or "cpu"
    from transformer_lens.model_bridge import TransformerBridge

    try:
        tokenizer, hf_model = load_hf(src, torch_dtype, device, device_map)
        with hub_offline():
            bridge = TransformerBridge.boot_transformers(str(src.path if src.kind != "gguf" else src.path.parent),
                                                         hf_model=hf_model, tokenizer=tokenizer, device=device,
                                                         dtype=torch_dtype)
    except KelocateError:
        raise
    except (OSError, ValueError, KeyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KelocateError(f"could not load model {src.display!r}: {first}") from exc
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    facts = {"kind": src.kind, **src.facts}
    return HookedModel(bridge, tokenizer, src.display, src.path, facts, entity_names)
