"""kelocate: locate knowledge in language models and edit it where it was located."""

from kelocate.errors import KelocateError
from kelocate.model import HookedModel, load_model

__version__ = "0.1.0"
__all__ = ["HookedModel", "KelocateError", "load_model", "__version__"]
