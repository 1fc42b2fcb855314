"""`kelocate.load_model`: the embedded organism by default, any local model otherwise.

This is where the model floor (`kelocate.model`, which knows nothing of the organism) and the organism
meet: no source (or "organism") loads the shipped checkpoint, and a folder with an organism world beside
its weights gets that world's entity names.
"""

from __future__ import annotations

import os

import torch

from kelocate.model.hooked import HookedModel


def load_model(source: str | os.PathLike | None = None, dtype: str | torch.dtype | None = None,
               device: str | None = None, device_map: str | dict | None = None) -> HookedModel:
    """Load a hooked model: None or 'organism' = the embedded organism; else a local folder, a .gguf file,
    a fetched name ('smollm2', see `kelocate models fetch`) or a hub id in the local Hugging Face cache."""
    from kelocate import organism
    from kelocate.model.load import load_model as load_local

    kwargs = {"dtype": dtype, "device": device, "device_map": device_map}
    if source is None or str(source) == "organism":
        return organism.load_organism(**kwargs)
    model = load_local(source, **kwargs)
    if model.path is not None and model.path.is_dir() and organism.world_file(model.path) is not None:
        organism.hand_over(model, model.path)
    return model
