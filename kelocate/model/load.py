"""Open a hooked model from what a user has locally: a Hugging Face directory, a hub id already in the local
Hugging Face cache (`owner/name` included), a GGUF file, or a name `kelocate models fetch` made local.

This is the floor's half of THE loader. The public `kelocate.load_model` (`kelocate/loading.py`) asks the
organism whether it knows the folder and calls `open_model` here with the `Provenance` it gets (family, entity
names, own corpus), so the model is complete when it is built and nothing writes onto it later. `open_model`
is not a second public loader: called without a provenance it opens any model as a generic one.

Nothing is downloaded at run time: every Hugging Face lookup is local-only while a model loads. A GGUF file
loads through transformers' `gguf_file` support (weights dequantised to float; the `gguf` package is the
optional extra `kelocate[gguf]`), and the GGUF marking is removed so the model can be saved and edited like
any other. Imports go one way: load -> fetch (known models) -> files (Source, load_hf).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from kelocate.errors import KelocateError
from kelocate.model.fetch import KNOWN_MODELS, known_model_dir
from kelocate.model.files import Source, hub_offline, load_hf, resolve_dtype
from kelocate.model.hooked import HookedModel
from kelocate.model.provenance import Provenance

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


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


def open_model(source: str | os.PathLike | Source, dtype: str | torch.dtype | None = None,
               device: str | None = None, device_map: str | dict | None = None,
               provenance: Provenance | None = None, name: str | None = None) -> HookedModel:
    """Open a hooked model from a local folder, a .gguf file, a fetched name or a cached hub id (or a `Source`
    that `resolve_source` found).

    dtype: 'float32' (default), 'bf16', 'fp16', ...; device: 'cpu' (default), 'cuda', ...; device_map: passed
    to transformers (e.g. 'auto' to spread a big model over GPUs; needs accelerate); provenance: what the model
    is (family, entity names, own corpus; see `provenance.py`; None: a generic model), fixed for the model's
    life; name: the name results show (None: the source as given). Users call `kelocate.load_model`, which
    finds the provenance of the organism's folders and passes it.
    """
    src = source if isinstance(source, Source) else resolve_source(source)
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
    return HookedModel(bridge, tokenizer, name or src.display, src.path, facts, provenance or Provenance())
