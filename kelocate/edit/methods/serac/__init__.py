"""SERAC (Mitchell et al. 2022): edits go to a memory, not into the weights. A scope classifier decides
whether an input is about a stored edit; in-scope inputs are answered by a counterfactual model that reads
the retrieved edit before the input, all others by the unchanged base model. Both small models are trained
by kelocate (`kelocate train serac`).

- `config.py`: `SERACConfig` (what a checkpoint was trained for; `serac.json`) and `profile_config`;
- `router.py`: the scope classifier, the counterfactual model, the memory and the `Router` that serves
  them, and `load_checkpoint`;
- `editor.py`: the `SERAC` editor (`editor("serac", trained=DIR)`), which serves its router on the model's
  serving stack; no weight changes, and the record's revert restores the memory exactly;
- `training.py`: `train`, resumable checkpoints.
"""

from kelocate.edit.methods.serac.config import CHECKPOINT, CONFIG, SERACConfig, profile_config
from kelocate.edit.methods.serac.editor import SERAC, serving_router
from kelocate.edit.methods.serac.router import (
    Router,
    ScopeClassifier,
    counterfactual_model,
    fact_prefix,
    forward_with_states,
    load_checkpoint,
    text_features,
)
from kelocate.edit.methods.serac.training import ScopeData, classifier_step, scope_data, train

__all__ = ["CHECKPOINT", "CONFIG", "SERAC", "Router", "SERACConfig", "ScopeClassifier", "ScopeData",
           "classifier_step", "counterfactual_model", "fact_prefix", "forward_with_states", "load_checkpoint",
           "profile_config", "scope_data", "serving_router", "text_features", "train"]
