"""The model organism: a synthetic world (knowledge graph) and a small Llama trained on it."""

from __future__ import annotations

from pathlib import Path

from kelocate.errors import KelocateError


def checkpoint_dir() -> Path:
    """Where the shipped organism checkpoint lives inside the package."""
    return Path(__file__).resolve().parent / "checkpoint"


def world_file(model_dir: str | Path | None) -> Path | None:
    """The synthetic world (`world.json`) beside an organism checkpoint, if the folder has one."""
    if model_dir is None:
        return None
    path = Path(model_dir) / "world.json"
    return path if path.is_file() else None


def entity_names(model_dir: str | Path) -> list[str]:
    """The entity names of the world beside an organism checkpoint (empty when there is none)."""
    from kelocate.organism.world import load_world

    path = world_file(model_dir)
    return sorted(set(load_world(path).entity_names())) if path is not None else []


def load_organism(path: str | Path | None = None, **kwargs):
    """Load an organism checkpoint (default: the shipped one) and hand the model its entity names."""
    from kelocate.model.load import load_model

    folder = Path(path) if path is not None else checkpoint_dir()
    if not (folder / "config.json").is_file():
        raise KelocateError(f"the model organism is missing at {folder}; run `kelocate organism build` to create it")
    model = load_model(folder, entity_names=entity_names(folder), **kwargs)
    model.source["family"] = "organism"  # editors pick the organism's hyper-parameters by it
    if path is None:
        model.name = "organism"
    return model
