"""What a SERAC checkpoint is trained for and how (`SERACConfig`, saved as `serac.json` beside its weights
`serac.safetensors`: 'scope/<name>' for the scope classifier, 'cf/<name>' for the counterfactual model's
trained layers), and the training settings of a model's profile (`profile_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kelocate.edit.training import with_overrides

CHECKPOINT = "serac.safetensors"
CONFIG = "serac.json"


@dataclass
class SERACConfig:
    """What a SERAC checkpoint was trained for and how."""

    scope_layers: list[int]
    cf_layers: list[int]
    scope_dim: int = 128
    threshold: float = 0.5
    separator: str = "\n"
    classifier_steps: int = 300
    cf_steps: int = 600
    classifier_lr: float = 1e-3
    cf_lr: float = 3e-4
    batch_size: int = 8
    scope_batch_size: int = 128
    other_weight: float = 10.0
    save_every: int = 50
    seed: int = 0
    fingerprint: str = ""
    d_model: int = 0
    trained_steps: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.classifier_steps + self.cf_steps


def profile_config(model, **overrides: Any) -> SERACConfig:
    """Training settings from the model's profile ([serac]); keyword overrides that are None are ignored."""
    from kelocate.edit.config import resolve

    hp = resolve("serac", model)
    fields = set(SERACConfig.__dataclass_fields__)
    config = SERACConfig(**{k: v for k, v in hp.items() if k in fields})
    # profile layers counted from the end (generic: the last 4, the last 8th) keep to the model's depth
    for key in ("scope_layers", "cf_layers"):
        kept = sorted({layer % model.n_layers for layer in getattr(config, key) if -model.n_layers <= layer
                       < model.n_layers})
        setattr(config, key, kept or [model.n_layers - 1])
    return with_overrides(config, overrides)
