"""What the trained editors (MEND, SERAC) share: their training examples (`TrainingEdit`; a training file's
through `read_training_edits`), and checkpoints that survive a SIGKILL at any moment.

A checkpoint folder holds `train_state.pt` (everything needed to resume: module and optimiser states, the
step, both random states, the loss log), the editor's config as JSON, its weights as safetensors (what
editing loads) and `losses.jsonl`. Each file is written atomically, the resume state last but one, so a
killed run restarts from the last complete checkpoint and, being seeded by the saved random states, ends
where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kelocate.atomic import os_errors, write_text, write_with
from kelocate.data.training import read_training_file
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError

STATE = "train_state.pt"
LOG = "losses.jsonl"


@dataclass(frozen=True)
class TrainingEdit:
    """One training edit: the request (its paraphrases are in scope too), prompts that must not change with
    their answers (`neighbours`: e.g. the subject's other facts, the hard negatives) and unrelated prompts."""

    request: EditRequest
    unrelated: tuple[str, ...] = ()
    neighbours: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_record(cls, record: Any) -> TrainingEdit:
        """The training edit of a file's record: a `kelocate.data.training.TrainingRecord`, or anything with
        its fields (prompt, subject, target_new, ground_truth, paraphrases, unrelated, neighbours)."""
        request = EditRequest(record.prompt, record.subject, record.target_new, ground_truth=record.ground_truth,
                              paraphrases=tuple(record.paraphrases))
        return cls(request, tuple(record.unrelated), tuple((p, a) for p, a in record.neighbours))


def read_training_edits(path: str | os.PathLike, option: str = "--data") -> list[TrainingEdit]:
    """The training edits of a file (`kelocate.data.training.read_training_file`: a JSON list / JSONL of
    {prompt, subject, target_new, ground_truth?, paraphrases?, unrelated?, neighbours?} records, or a
    KnowEdit task file); a bad file is one line of error naming `option`."""
    return [TrainingEdit.from_record(record) for record in read_training_file(path, option)]


class Checkpoints:
    """A training folder: `config_name` (JSON), `weights_name` (safetensors), the resume state and the log."""

    def __init__(self, folder: str | Path, config_name: str, weights_name: str, what: str) -> None:
        self.folder = Path(folder)
        self.config_name, self.weights_name, self.what = config_name, weights_name, what

    def resume(self, identity: Mapping[str, Any]) -> dict[str, Any] | None:
        """The saved resume state, or None for a fresh folder; refuses a folder trained for something else
        (any `identity` key, e.g. the fingerprint or layers, differs from the saved config)."""
        state = self.folder / STATE
        if not state.is_file():
            return None
        config = self.folder / self.config_name
        saved = json.loads(config.read_text()) if config.is_file() else {}
        if any(saved.get(k) != v for k, v in identity.items()):
            raise KelocateError(f"{self.folder} holds {self.what} training for another model or other settings "
                                f"({', '.join(identity)}); pass a new --out")
        return torch.load(state, weights_only=False)

    def save(self, state: dict[str, Any], config: dict[str, Any], tensors: dict[str, torch.Tensor],
             rng: random.Random, log: list[dict]) -> None:
        """Write the resume state (with both random states and the log), the config, the weights and the log."""
        from safetensors.torch import save_file

        with os_errors(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        full = {**state, "rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "log": log}
        write_with(self.folder / STATE, lambda tmp: torch.save(full, tmp))
        write_text(self.folder / self.config_name, json.dumps(config, indent=2))
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        write_with(self.folder / self.weights_name, lambda tmp: save_file(tensors, str(tmp)))
        write_text(self.folder / LOG, "".join(json.dumps(row) + "\n" for row in log))

    @staticmethod
    def restore_random(state: dict[str, Any], rng: random.Random) -> None:
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])


def with_overrides(config, overrides: Mapping[str, Any]):
    """`config` with every override that is not None set on it (command-line options left out are None)."""
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    return config


def loss_row(step: int, losses: Mapping[str, torch.Tensor | float], **extra: Any) -> dict[str, Any]:
    """One line of the loss log."""
    return {"step": step, **extra, **{k: round(float(v.detach() if isinstance(v, torch.Tensor) else v), 6)
                                      for k, v in losses.items()}}
