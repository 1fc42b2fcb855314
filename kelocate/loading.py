"""`kelocate.load_model`, THE public loader: the embedded organism by default, any local model otherwise.

This is where the model floor (`kelocate.model`, which knows nothing of the organism) and the organism
meet. The source is resolved to files first; the organism says what those files are (`provenance_of`: a
folder with an organism world beside its weights is the organism, with that world's entity names and
training text), and the floor opens the model with that provenance already set (`model.load.open_model`).
So the shipped checkpoint, a rebuilt one and an edited copy load with the same family, hyper-parameters
and noise scale, whichever way they are named.
"""

from __future__ import annotations

import os

import torch

from kelocate.model.hooked import HookedModel


def load_model(source: str | os.PathLike | None = None, dtype: str | torch.dtype | None = None,
               device: str | None = None, device_map: str | dict | None = None) -> HookedModel:
    """Load a hooked model: None or 'organism' = the embedded organism; else a local folder, a .gguf file,
    a fetched name ('smollm2', see `kelocate models fetch`) or a hub id in the local Hugging Face cache.

    dtype: 'float32' (default), 'bf16', 'fp16', ...; device: 'cpu' (default), 'cuda', ...; device_map: passed
    to transformers (e.g. 'auto' to spread a big model over GPUs; needs accelerate).
    """
    from kelocate import organism
    from kelocate.model.load import open_model, resolve_source

    name = None
    if source is None or str(source) == "organism":
        source, name = organism.shipped_checkpoint(), "organism"
    src = resolve_source(source)
    return open_model(src, dtype=dtype, device=device, device_map=device_map,
                      provenance=organism.provenance_of(src.path), name=name)
