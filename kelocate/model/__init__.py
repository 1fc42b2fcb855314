"""The floor every method stands on: load, tokenize, run, hook, score and change a model.

It imports nothing else of kelocate but `errors` and `atomic`. A model is opened by `load.open_model` with
its `Provenance` (family, entity names, own corpus) already known: the one public loader,
`kelocate.load_model` (`kelocate/loading.py`), asks the organism for it. `locate/`, `edit/`, `probes/` and
`studies/` build on what is here.
"""

from kelocate.model.hooked import HookedModel
from kelocate.model.provenance import Provenance
from kelocate.model.tokens import Encoded

__all__ = ["Encoded", "HookedModel", "Provenance"]
