"""Knowledge-graph recovery (the comprehensive study's Figure 10, made a measurement): edit a fact and edit it back,
in the world and in the model.

The paper draws, without a procedure, that editing a knowledge graph and editing it back restores it exactly while
"similar recovery efforts fail to reinstate the original model". `run_recovery` measures both on the organism:

- the world: N known facts (s, r, o) become (s, r, o') and then (s, r, o) again, K times, in the networkx graph
  (`kelocate.organism.graph_edit.round_trips`): the graph distance from the original after every round;
- the model, per weight editor and mode: the same N facts edited o -> o' and then o' -> o with the same method
  (a second edit, not a revert), K times; 'single' edits one fact at a time, 'batch' all N in one edit (editors
  that batch), and 'revert' is the control (the forward edits reverted bit for bit). After every round:
  `recovery_probes.measure` (weight distance per written layer, recall of the edited facts' original answers,
  of every other known fact and of the edited subjects' other facts, KL on unrelated prompts), and after every
  forward half the edit success (recall of the new answers).

The model is restored exactly after every run (the first-written values of every parameter, kept as the edits
go) and checked against its state hash at the start; a run whose edit fails records the error and the study
goes on. `RecoveryResult` is the whole result, JSON both ways.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from kelocate.atomic import write_text
from kelocate.edit import registry
from kelocate.edit.record import EditRecord, revert_all
from kelocate.edit.request import EditRequest
from kelocate.errors import KelocateError
from kelocate.locate_then_edit import locate_and_edit
from kelocate.model import weights
from kelocate.organism.datasets import OrganismEdit, exactly_n_cases, organism_world
from kelocate.organism.graph_edit import FactEdit, round_trips
from kelocate.organism.world import World
from kelocate.studies.known_facts import NO_SOURCE, file_cases, file_facts
from kelocate.studies.recovery_probes import (
    Probes,
    Reference,
    file_recovery_probes,
    measure,
    recall_vector,
    recovery_probes,
    reference,
)

FORMAT = "kelocate-recovery"
VERSION = 1
DEFAULT_METHODS = ("rome", "memit", "ft-l", "ft-m", "kn", "alphaedit")
MODES = ("single", "batch", "revert")
Log = Callable[[str], None]


@dataclass(frozen=True)
class RecoverySettings:
    """What to run: weight editors (`methods`, each one fact at a time), those also run as one batch (`batch`)
    and as the bit-exact revert control (`control`), N facts, K rounds, the unrelated prompts for the KL, the
    seed of the facts and new targets, and per method the editor's settings (hyper-parameter overrides, and
    `trained`: the checkpoint folder of a method that needs one, MEND)."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    facts: int = 20
    rounds: int = 5
    batch: tuple[str, ...] = ("memit",)
    control: tuple[str, ...] = ("rome",)
    unrelated: int = 100
    seed: int = 0
    editors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON data (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def runs(self) -> list[tuple[str, str]]:
        """(method, mode) in the order they run: every method single, then the batches, then the controls."""
        return ([(m, "single") for m in self.methods] + [(m, "batch") for m in self.batch]
                + [(m, "revert") for m in self.control])

    def check(self) -> None:
        """One line of error for settings the study cannot run."""
        if self.facts < 1 or self.rounds < 1:
            raise KelocateError(f"need at least 1 fact and 1 round, got {self.facts} facts and {self.rounds} rounds")
        if self.unrelated < 0:
            raise KelocateError(f"--unrelated must be 0 or more, got {self.unrelated}")
        if not self.runs():
            raise KelocateError("no methods to run; pass --methods rome,memit,...")
        for name in dict.fromkeys([*self.methods, *self.batch, *self.control]):
            entry = registry.method(name)
            if entry.serves is not None:
                raise KelocateError(f"{name} serves {entry.serves} instead of writing weights; the recovery study "
                                    "measures weight editors")
            if entry.needs_pool:
                raise KelocateError(f"{name} needs a pool of demonstrations; the recovery study runs weight editors")
            if entry.needs_trained and registry.TRAINED not in self.editors.get(name, {}):
                raise KelocateError(f"{name} needs a trained checkpoint; pass --trained {name}=DIR")
        for name in self.batch:
            if not registry.editor_class(name).batch:
                raise KelocateError(f"{name} edits one fact at a time; --batch takes editors that batch "
                                    "(memit, pmet, alphaedit)")


@dataclass
class RunResult:
    """One (method, mode): what it wrote and, per round, the measurements (`recovery_probes.measure` plus
    `round`, `edit_success` after the forward half and `seconds`); `error` when an edit failed."""

    method: str
    mode: str
    parameters: list[str] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def label(self) -> str:
        name = registry.method(self.method).label
        return name if self.mode == "single" else f"{name} ({self.mode})"


@dataclass
class RecoveryResult:
    """The whole study: settings, the edited facts, probe counts, the unedited model's recall, the world's
    round trips, every run, and whether the model was restored to its exact starting state."""

    model: str
    fingerprint: str
    settings: dict[str, Any]
    facts: list[dict[str, str]]
    probes: dict[str, int]
    baseline: dict[str, float]
    world: list[dict[str, Any]]
    runs: list[RunResult]
    restored: bool = False
    state_hash: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["runs"] = [asdict(r) | {"label": r.label} for r in self.runs]
        return {"format": FORMAT, "version": VERSION} | data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecoveryResult:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KelocateError('not a recovery result (missing "format": "kelocate-recovery")')
        fields = {k: v for k, v in data.items() if k not in ("format", "version")}
        fields["runs"] = [RunResult(**{k: v for k, v in r.items() if k != "label"}) for r in fields["runs"]]
        return cls(**fields)

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON, atomically."""
        return write_text(path, json.dumps(self.to_json(), indent=1, allow_nan=True) + "\n")


# ---------------------------------------------------------------------- the world
def world_edits(world: World, cases: Sequence[OrganismEdit]) -> list[FactEdit]:
    """The cases as edits of the world's graph (node ids): subject -[relation]-> old becomes new."""
    subjects = {(f.subject, f.relation): f.subject_id for f in world.facts("known")}
    out = []
    for case in cases:
        subject = subjects.get((case.request.subject, case.relation))
        old = world.objects(subject, case.relation) if subject is not None else []
        new = [n for n in world.nodes(world.relations[case.relation].range) if world.name(n) == case.request.target_new]
        if len(old) != 1 or len(new) != 1:
            raise KelocateError(f"cannot place {case.request.prompt!r} -> {case.request.target_new!r} in the world")
        out.append(FactEdit(subject, case.relation, old[0], new[0]))
    return out


def file_world(pool: Sequence[OrganismEdit]) -> nx.MultiDiGraph:
    """A fact file as a knowledge graph: a node per subject ('s:NAME') and per object, original or new
    ('o:NAME'), an edge subject -[relation]-> original object per fact (a fact met twice is one edge)."""
    graph = nx.MultiDiGraph()
    for case in pool:
        r = case.request
        graph.add_node(f"s:{r.subject}", name=r.subject)
        for obj in (r.ground_truth or "", r.target_new):
            graph.add_node(f"o:{obj}", name=obj)
        if not any(d.get("relation") == case.relation for _, o, d in graph.out_edges(f"s:{r.subject}", data=True)
                   if o == f"o:{r.ground_truth}"):
            graph.add_edge(f"s:{r.subject}", f"o:{r.ground_truth}", relation=case.relation)
    return graph


def file_edits(cases: Sequence[OrganismEdit]) -> list[FactEdit]:
    """The cases as edits of `file_world`'s graph."""
    return [FactEdit(f"s:{c.request.subject}", c.relation, f"o:{c.request.ground_truth}", f"o:{c.request.target_new}")
            for c in cases]


# ---------------------------------------------------------------------- the model
def make_editor(method: str, settings: RecoverySettings):
    """The editor of `method` with the study's settings for it (overrides, a trained checkpoint)."""
    return registry.editor(method, **settings.editors.get(method, {}))


def reverse_request(request: EditRequest) -> EditRequest:
    """The edit back: the new answer becomes the ground truth, the original answer the target."""
    if not request.ground_truth:
        raise KelocateError(f"{request.prompt!r} has no original answer to edit back to")
    return EditRequest(request.prompt, request.subject, request.ground_truth, ground_truth=request.target_new,
                       paraphrases=request.paraphrases)


def _edit_all(model, editor, requests: list[EditRequest], batch: bool,
              keep: Callable[[EditRecord], None]) -> list[EditRecord]:
    """Apply `requests` as one batch or one at a time; `keep` sees every record as soon as it is applied (so an
    edit failing halfway still leaves the originals of what the earlier ones wrote)."""
    records = []
    for group in ([requests] if batch else [[r] for r in requests]):
        records.append(locate_and_edit(model, editor, group))
        keep(records[-1])
    return records


def run_one(model, method: str, mode: str, cases: Sequence[OrganismEdit], probes: Probes, ref: Reference,
            settings: RecoverySettings, log: Log = lambda text: None) -> RunResult:
    """K round trips of one (method, mode) on `model`, measured after each; the model is restored exactly
    before this returns (a failed edit is recorded in the result, not raised)."""
    if mode not in MODES:
        raise KelocateError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    result = RunResult(method, mode)
    editor = make_editor(method, settings)
    forward = [c.request for c in cases]
    back = [reverse_request(r) for r in forward]
    originals: dict[str, torch.Tensor] = {}
    start = time.perf_counter()

    def keep(record: EditRecord) -> None:
        for name in record.names:
            originals.setdefault(name, record.before[name])

    try:
        for k in range(1, settings.rounds + 1):
            t0 = time.perf_counter()
            records = _edit_all(model, editor, forward, mode == "batch", keep)
            success = recall_vector(model, probes.targets)
            if mode == "revert":
                revert_all(records)
            else:
                _edit_all(model, editor, back, mode == "batch", keep)
            row = measure(model, probes, ref, originals)
            result.rounds.append({"round": k, "edit_success": sum(success) / len(success), **row,
                                  "seconds": round(time.perf_counter() - t0, 3)})
            log(f"{result.label} round {k}: distance {row['distance_mean']:.4f}, edited recall "
                f"{row['edited_recall']:.2f}, other recall {row['other_recall']:.3f}, KL {row['kl']:.4g}")
    except KelocateError as exc:
        result.error = str(exc)
        log(f"{result.label}: {exc}")
    finally:
        weights.restore(model, originals)
    result.parameters = list(originals)
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def run_recovery(model, settings: RecoverySettings | None = None, world: World | None = None,
                 log: Log = lambda text: None, facts_file: str | Path | None = None) -> RecoveryResult:
    """The recovery study on `model` with `settings`: facts of `world` (default: the organism's), or of
    `facts_file` (a KnowEdit or CounterFact file, for any model; its facts make the graph, `file_world`). The
    model is left bit-identical to how it came (checked by `weights.state_hash`)."""
    settings = settings or RecoverySettings()
    settings.check()
    start = time.perf_counter()
    if facts_file is not None and world is None:
        pool = file_facts(facts_file, settings.seed)
        cases = file_cases(model, facts_file, settings.facts, seed=settings.seed)
        probes = file_recovery_probes(model, cases, pool, settings.unrelated)
        graph, edits = file_world(pool), file_edits(cases)
    else:
        world = world or organism_world(model, f"the recovery study {NO_SOURCE}")
        cases = exactly_n_cases(model, world, settings.facts, seed=settings.seed)
        probes = recovery_probes(model, world, cases, settings.unrelated)
        graph, edits = world.graph, world_edits(world, cases)
    ref = reference(model, probes)
    initial = weights.state_hash(model)
    trips = round_trips(graph, edits, settings.rounds)
    log(f"world: distance after each round {[t['distance'] for t in trips]}")
    runs = []
    for method, mode in settings.runs():
        runs.append(run_one(model, method, mode, cases, probes, ref, settings, log))
        if weights.state_hash(model) != initial:
            raise KelocateError(f"the model was not restored after {method} ({mode}); this is a bug in kelocate")
    facts = [{"prompt": c.request.prompt, "subject": c.request.subject, "relation": c.relation,
              "object": c.request.ground_truth or "", "new_object": c.request.target_new} for c in cases]
    return RecoveryResult(model.name, model.fingerprint, settings.to_json(),
                          facts, {"edited": len(probes.edited), "others": len(probes.others),
                                  "neighbours": len(probes.neighbours), "unrelated": len(probes.unrelated)},
                          ref.summary(), trips, runs, restored=weights.state_hash(model) == initial,
                          state_hash=initial, seconds=round(time.perf_counter() - start, 3))
