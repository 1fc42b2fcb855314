"""What a MEND hypernetwork is trained for and how (`MENDConfig`, saved as `mend.json` beside its weights
`mend.safetensors`), and the training settings of a model's profile (`profile_config`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kelocate.edit.training import with_overrides

CHECKPOINT = "mend.safetensors"  # the hypernetwork's weights ('net/<name>' tensors)
CONFIG = "mend.json"  # its MENDConfig


@dataclass
class MENDConfig:
    """What a MEND hypernetwork was trained for and how."""

    layers: list[int]
    rank: int = 64
    lr_init: float = 1e-3
    c_edit: float = 0.1
    lr: float = 1e-3
    steps: int = 500
    batch_size: int = 4
    save_every: int = 50
    seed: int = 0
    fingerprint: str = ""
    d_model: int = 0
    d_mlp: int = 0
    trained_steps: int = 0
    notes: list[str] = field(default_factory=list)


def profile_config(model, layers: Sequence[int] | None = None, **overrides: Any) -> MENDConfig:
    """Training settings from the model's profile ([mend] train_* keys); `layers` default: the last three;
    keyword overrides that are None are ignored."""
    from kelocate.edit.config import resolve

    hp = resolve("mend", model)
    config = MENDConfig(layers=list(layers) if layers else list(range(max(0, model.n_layers - 3), model.n_layers)),
                        rank=hp["rank"], lr_init=hp["lr_init"], c_edit=hp["c_edit"], lr=hp["train_lr"],
                        steps=hp["train_steps"], batch_size=hp["train_batch_size"])
    return with_overrides(config, overrides)
