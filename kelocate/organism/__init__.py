"""The model organism: a synthetic world (knowledge graph) and a small Llama trained on it.

A checkpoint folder holds the model's files and its world (`world.json`). What the world tells about the
model (its family, entity names and training text) is the model's `Provenance`: `provenance_of(folder)`
computes it, and the one public loader (`kelocate.load_model`) passes it to the model floor when it opens
the folder, so an organism loaded by any path is the same organism, and nothing writes onto it afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kelocate.errors import KelocateError
from kelocate.model.provenance import ORGANISM, Provenance


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


@dataclass(frozen=True)
class TrainingCorpus:
    """The training text of the organism checkpoint in `folder`, read when called (a model's `own_corpus`).

    A frozen dataclass rather than a closure, so that two loads of one folder have equal provenances.
    """

    folder: Path

    def __call__(self) -> tuple[list[str], str]:
        return training_corpus(self.folder)


def provenance_of(folder: str | Path | None) -> Provenance | None:
    """The provenance of an organism checkpoint (family, entity names, training text), or None when `folder`
    is not one (no world beside its weights). `kelocate.load_model` hands it to every model it opens."""
    if folder is None or not Path(folder).is_dir() or world_file(folder) is None:
        return None
    folder = Path(folder).resolve()
    return Provenance(ORGANISM, tuple(entity_names(folder)), TrainingCorpus(folder))


def shipped_checkpoint() -> Path:
    """The shipped organism checkpoint's folder; a one-line error naming the fix when it is missing."""
    folder = checkpoint_dir()
    if not (folder / "config.json").is_file():
        raise KelocateError(f"the model organism is missing at {folder}; run `kelocate organism build` to create it")
    return folder
