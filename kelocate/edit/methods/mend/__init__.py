"""MEND (Mitchell et al. 2022): a trained hypernetwork turns the fine-tuning gradient of an edit into a
weight update.

- `config.py`: `MENDConfig` (what a hypernetwork was trained for; `mend.json`) and `profile_config`;
- `hypernetwork.py`: the network (per layer, a low-rank map of the gradient's rank-one factors), the
  factors read from the model, the edited forward training runs through, and `load_hypernetwork`;
- `editor.py`: the `MEND` editor (`editor("mend", trained=DIR)`);
- `training.py`: `training_step` and `train` (`kelocate train mend`), resumable checkpoints.
"""

from kelocate.edit.methods.mend.config import CHECKPOINT, CONFIG, MENDConfig, profile_config
from kelocate.edit.methods.mend.editor import MEND
from kelocate.edit.methods.mend.hypernetwork import Hypernetwork, edited_forward, factors, load_hypernetwork
from kelocate.edit.methods.mend.training import train, training_step
from kelocate.edit.training import TrainingEdit

__all__ = ["CHECKPOINT", "CONFIG", "MEND", "Hypernetwork", "MENDConfig", "TrainingEdit", "edited_forward", "factors",
           "load_hypernetwork", "profile_config", "train", "training_step"]
