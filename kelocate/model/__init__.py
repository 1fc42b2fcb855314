"""The floor every method stands on: load, tokenize, run, hook, score and change a model.

It imports nothing else of kelocate but `errors` and `atomic`: the organism hands a loaded model its entity
names (`kelocate.loading`), and `locate/`, `edit/`, `probes/` and `studies/` build on what is here.
"""

from kelocate.model.hooked import HookedModel
from kelocate.model.load import load_model
from kelocate.model.tokens import Encoded

__all__ = ["Encoded", "HookedModel", "load_model"]
