"""kelocate: locate knowledge in language models and edit it where it was located.

A few lines trace a fact:

    import kelocate
    model = kelocate.load_model()                  # the organism; or "smollm2", a folder, a .gguf file
    result = kelocate.trace(model, "SMAP was created in")
"""

from kelocate.errors import KelocateError
from kelocate.loading import load_model
from kelocate.locate.causal_trace import TraceResult, trace
from kelocate.locate.neurons import find_knowledge_neurons
from kelocate.locate.patching import patch_sweep
from kelocate.model import HookedModel
from kelocate.model.scoring import score_targets
from kelocate.model.sites import Patch, cache_activations, patching, run_patched, site

__version__ = "0.1.0"
__all__ = ["HookedModel", "KelocateError", "Patch", "TraceResult", "__version__", "cache_activations",
           "find_knowledge_neurons", "load_model", "patch_sweep", "patching", "run_patched", "score_targets",
           "site", "trace"]
