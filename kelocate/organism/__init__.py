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


def training_corpus(model_dir: str | Path) -> tuple[list[str], str]:
    """The organism's training text (from the world beside its checkpoint) and a description of it."""
    from kelocate.organism.corpus import training_texts
    from kelocate.organism.world import load_world

    path = world_file(model_dir)
    if path is None:
        raise KelocateError(f"no organism world beside {model_dir}; rebuild it with `kelocate organism build`")
    return training_texts(load_world(path)), f"organism training text ({path.name} beside the checkpoint)"


def hand_over(model, folder: str | Path) -> None:
    """What the organism tells a loaded model about itself: its family, entity names and training text."""
    import functools

    model.entity_names = entity_names(folder)
    model.source["family"] = "organism"  # editors pick the organism's hyper-parameters by it
    model.own_corpus = functools.partial(training_corpus, folder)


def load_organism(path: str | Path | None = None, **kwargs):
    """Load an organism checkpoint (default: the shipped one) and hand the model its entity names."""
    from kelocate.model.load import load_model

    folder = Path(path) if path is not None else checkpoint_dir()
    if not (folder / "config.json").is_file():
        raise KelocateError(f"the model organism is missing at {folder}; run `kelocate organism build` to create it")
    model = load_model(folder, **kwargs)
    hand_over(model, folder)
    if path is None:
        model.name = "organism"
    return model
