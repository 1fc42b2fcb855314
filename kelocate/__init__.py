"""kelocate: locate knowledge in language models and edit it where it was located.

A few lines trace a fact, edit it where it was located, and undo the edit:

    import kelocate
    model = kelocate.load_model()                  # the organism; or "smollm2", a folder, a .gguf file
    result = kelocate.trace(model, "SMAP was created in")
    request = kelocate.EditRequest("SMAP was created in", "SMAP", "France")
    record = kelocate.locate_and_edit(model, kelocate.editor("rome"), request, layers="auto")
    record.revert()                                # bit-identical weights again
"""

from kelocate import notebook as _notebook  # noqa: F401  (registers the inline views of the results)
from kelocate.edit import EditRecord, EditRequest, editor
from kelocate.errors import KelocateError
from kelocate.loading import load_model
from kelocate.locate.causal_trace import TraceResult, trace
from kelocate.locate.neurons import find_knowledge_neurons
from kelocate.locate.patching import patch_sweep
from kelocate.locate_then_edit import auto_layers, locate_and_edit
from kelocate.model import HookedModel
from kelocate.model.scoring import score_targets
from kelocate.model.sites import Patch, cache_activations, patching, run_patched, site
from kelocate.model.stack import plain_paths

__version__ = "0.1.0"
__all__ = ["EditRecord", "EditRequest", "HookedModel", "KelocateError", "Patch", "TraceResult", "__version__",
           "auto_layers", "cache_activations", "editor", "find_knowledge_neurons", "load_model", "locate_and_edit",
           "patch_sweep", "patching", "plain_paths", "run_patched", "score_targets", "site", "trace"]
