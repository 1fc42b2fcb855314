"""ONE registry of the edit methods: their names, where their editors live and what each needs.

Everything that lists methods reads it: `kelocate.edit.editor` (the public API), `kelocate edit` and
`kelocate train` (the CLI), the KnowEdit study (its default methods, their order and what to train first)
and the benchmarks. Editor classes and training functions are named by "module:attribute" and imported on
first use, so reading the registry imports no method (and the record can find the editor of a saved edit
by its method name without importing any method itself).

What a method declares (`Method`):

- `name` (what users type), `label` (what tables print) and `editor` ("module:Class");
- `locate`: what a locator hands its editor (`kelocate.locate_then_edit`): "layer" (one MLP layer),
  "range" (MEMIT's consecutive layers), "neurons" (knowledge neurons), or None (nothing to locate:
  in-context text, or the layers a trained MEND / SERAC checkpoint was trained for);
- `needs`: what its editor must be given besides hyper-parameters: "trained" (a checkpoint folder written
  by `kelocate train NAME`; `editor(name, trained=DIR)`, `--trained DIR`, the study's `trained` key) or
  "pool" (IKE's demonstrations: `editor("ike", pool=[requests])`, `--pool FILE`); `uses_corpus`: its key
  statistics take a text corpus (`corpus=`, `--corpus`);
- `trainer` / `training_config` ("module:function"): how `kelocate train NAME` and the study train it
  (`train(model, examples, out_dir, config)`; `profile_config(model, **overrides)`), for trainable methods;
  `training_draws`: how many new targets are drawn per organism training fact (SERAC 8: its counterfactual
  model must read the target from the edit instead of memorising it; `kelocate train`'s --draws default and
  the study's);
- `serves`: what it serves instead of writing weights ("in-context text", "an edit memory"), None for the
  editors that write weights;
- `study`: whether the KnowEdit study runs it by default (the registry's order is the study's order).

The one name for a trained checkpoint everywhere is `trained` (`TRAINED`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kelocate.errors import KelocateError

TRAINED = "trained"  # the one name of a trained checkpoint folder: API keyword, CLI --trained, study config key
POOL = "pool"  # IKE's demonstrations: API keyword (the CLI reads them from --pool FILE)
LOCATES = ("layer", "range", "neurons", None)


def _resolve(path: str) -> Any:
    """The attribute named by "module:attribute", imported now."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Method:
    """One edit method and what it needs (see the module docstring)."""

    name: str
    label: str
    editor: str
    locate: str | None = "layer"
    needs: tuple[str, ...] = ()
    uses_corpus: bool = False
    trainer: str | None = None
    training_config: str | None = None
    training_draws: int = 1
    serves: str | None = None
    study: bool = True

    def __post_init__(self) -> None:
        if self.locate not in LOCATES:
            raise ValueError(f"{self.name}: locate must be one of {LOCATES}, got {self.locate!r}")
        if (self.trainer is None) != (self.training_config is None) or (self.trainer is None) == self.needs_trained:
            raise ValueError(f"{self.name}: a trained method names its trainer and training config, others none")
        if self.training_draws < 1 or (self.training_draws > 1 and not self.trainable):
            raise ValueError(f"{self.name}: training_draws is 1 or more, and more than 1 only for a trained method")

    @property
    def needs_trained(self) -> bool:
        """Whether its editor needs a checkpoint trained by `kelocate train NAME` (`trained=DIR`)."""
        return TRAINED in self.needs

    @property
    def needs_pool(self) -> bool:
        """Whether its editor draws demonstrations from a pool of other edits (`pool=[requests]`)."""
        return POOL in self.needs

    @property
    def trainable(self) -> bool:
        """Whether `kelocate train NAME` trains it."""
        return self.trainer is not None

    def editor_class(self) -> type:
        """The editor class (imported on first use)."""
        return _resolve(self.editor)

    def train_function(self) -> Callable[..., dict[str, Any]]:
        """`train(model, examples, out_dir, config, progress=None)` of a trainable method."""
        if self.trainer is None:
            raise KelocateError(f"{self.name} is not trained; `kelocate train` trains {', '.join(TRAINABLE)}")
        return _resolve(self.trainer)

    def config_function(self) -> Callable[..., Any]:
        """`profile_config(model, **overrides)`: the training settings of a trainable method on a model."""
        if self.training_config is None:
            raise KelocateError(f"{self.name} is not trained; `kelocate train` trains {', '.join(TRAINABLE)}")
        return _resolve(self.training_config)


_M = "kelocate.edit.methods"
# the KnowEdit study's order (its report's rows follow it); IKE last, not a study method
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("kn", "KN", f"{_M}.kn:KN", locate="neurons"),
    Method("rome", "ROME", f"{_M}.rome:ROME", uses_corpus=True),
    Method("memit", "MEMIT", f"{_M}.memit:MEMIT", locate="range", uses_corpus=True),
    Method("pmet", "PMET", f"{_M}.pmet:PMET", locate="range", uses_corpus=True),
    Method("alphaedit", "AlphaEdit", f"{_M}.alphaedit:AlphaEdit", locate="range", uses_corpus=True),
    Method("mend", "MEND", f"{_M}.mend.editor:MEND", locate=None, needs=(TRAINED,),
           trainer=f"{_M}.mend.training:train", training_config=f"{_M}.mend.config:profile_config"),
    Method("ft-l", "FT-L", f"{_M}.ft:FTL"),
    Method("ft-m", "FT-M", f"{_M}.ft:FTM"),
    Method("serac", "SERAC", f"{_M}.serac.editor:SERAC", locate=None, needs=(TRAINED,),
           trainer=f"{_M}.serac.training:train", training_config=f"{_M}.serac.config:profile_config",
           training_draws=8, serves="an edit memory"),
    Method("ice", "ICE", f"{_M}.ice:ICE", locate=None, serves="in-context text"),
    Method("adalora", "AdaLoRA", f"{_M}.adalora:AdaLoRA"),
    Method("ike", "IKE", f"{_M}.ice:IKE", locate=None, needs=(POOL,), serves="in-context text", study=False),
)}
STUDY_METHODS: tuple[str, ...] = tuple(name for name, m in METHODS.items() if m.study)
OPTIONAL_METHODS: tuple[str, ...] = tuple(name for name, m in METHODS.items() if not m.study)
TRAINABLE: tuple[str, ...] = tuple(name for name, m in METHODS.items() if m.trainable)
CORPUS_METHODS: tuple[str, ...] = tuple(name for name, m in METHODS.items() if m.uses_corpus)


def method(name: str) -> Method:
    """The registry entry of a method name (case-insensitive); one line of error for an unknown one."""
    key = name.lower() if isinstance(name, str) else name
    if key not in METHODS:
        raise KelocateError(f"unknown edit method {name!r}; use one of {', '.join(METHODS)}")
    return METHODS[key]


def editor_class(name: str) -> type:
    """The editor class of a method name."""
    return method(name).editor_class()


def editor(name: str, **settings: Any):
    """An editor of method `name` with hyper-parameter overrides and what it needs (`trained=DIR` for MEND and
    SERAC, `pool=[requests]` for IKE, `config_file=`, `corpus=` where used)."""
    return editor_class(name)(**settings)
