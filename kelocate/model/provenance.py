"""What a model is, beyond its weights: its family, the entities it knows, the text it was trained on.

A `Provenance` is handed to the model when it is loaded (`kelocate.load_model` asks the organism for the
provenance of a folder it recognises and passes it to `model.load.open_model`) and never changes
afterwards: `HookedModel.provenance` has no setter, and the dataclass is frozen. So every path that loads the
same folder gets the same provenance, and nothing above `model/` writes attributes onto a model to say what
it is (before, the organism wrote entity names, a family and a corpus onto a loaded model, and a second
loader that did not know the organism silently produced a model with other hyper-parameters and another
noise scale).

What reads it:

- `family` picks hyper-parameters (`edit/config.py`) and the organism's own data sets (`is_organism`);
- `entity_names` feed subject inference and the noise scale of causal tracing;
- `corpus` is the model's own training text, the default corpus of the editors' key statistics.

The model floor does not know what an organism is beyond the family's name: the organism module builds its
provenance (`kelocate.organism.provenance_of`), and a model of unknown origin gets `Provenance()` (generic).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# () -> (texts, description): the text a model was trained on, read when first needed (it may be large)
Corpus = Callable[[], tuple[list[str], str]]

ORGANISM = "organism"


@dataclass(frozen=True)
class Provenance:
    """Where a model comes from, as far as the methods care; frozen, set once at load.

    family: "organism" for kelocate's model organism, "" for any other (generic) model.
    entity_names: the entities the model was trained on (sorted, unique); empty when unknown.
    corpus: a zero-argument callable returning (texts, description) of the model's own training text, or None.
        Compare it by value (a frozen dataclass with `__call__`) so that two loads of one folder are equal.
    """

    family: str = ""
    entity_names: tuple[str, ...] = ()
    corpus: Corpus | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # a list (or any iterable) is stored as a sorted tuple of unique names, so the object stays hashable
        names: Iterable[str] = self.entity_names
        object.__setattr__(self, "entity_names", tuple(sorted(set(names))))

    @property
    def is_organism(self) -> bool:
        """Whether the model is kelocate's model organism (its own hyper-parameters, data sets and world)."""
        return self.family == ORGANISM
