"""The knowledge-graph recovery study: the world's round trip is the identity, the model's
measures are zero for an unchanged model and positive for a changed one, the revert control is exact, the model is
restored after the study, and the CLI and the figure write their files."""

from __future__ import annotations

import copy
import json
import random

import networkx as nx
import pytest

from kelocate.errors import KelocateError
from kelocate.model import weights
from kelocate.organism.graph_edit import FactEdit, edit_world, graph_distance, graphs_identical, round_trips
from kelocate.organism.world import World, load_world


def _world_edits(world: World, n: int, seed: int = 0) -> list[FactEdit]:
    """n edits of single-answer known facts to another entity of the relation's range."""
    rng = random.Random(seed)
    facts = [f for f in world.facts("known") if not world.relations[f.relation].one_to_many]
    out = []
    for fact in rng.sample(facts, n):
        choices = [o for o in world.nodes(world.relations[fact.relation].range) if o != fact.object_id]
        out.append(FactEdit(fact.subject_id, fact.relation, fact.object_id, rng.choice(choices)))
    return out


# ---------------------------------------------------------------------- the world
def test_world_round_trip_is_the_identity():
    world = load_world()
    before = copy.deepcopy(world.graph)
    edits = _world_edits(world, 50)
    trips = round_trips(world.graph, edits, rounds=3)
    assert [t["distance"] for t in trips] == [0, 0, 0]
    assert [t["forward_distance"] for t in trips] == [2 * len(edits)] * 3  # one edge out, one in, per fact
    assert all(t["identical"] and t["same_order"] for t in trips)
    assert graphs_identical(world.graph, before)  # the input graph is never changed

    edited = edit_world(world.graph, edits[0].subject, edits[0].relation, edits[0].new)
    back = edit_world(edited, edits[0].subject, edits[0].relation, edits[0].old)
    assert graph_distance(world.graph, edited) == 2 and not graphs_identical(world.graph, edited)
    assert nx.utils.graphs_equal(world.graph, back)
    assert nx.node_link_data(back, edges="links") == nx.node_link_data(world.graph, edges="links")
    rebuilt = World(back, world.relations.values(), world.chains, world.seed, world.size)
    assert rebuilt.facts("all") == world.facts("all") and rebuilt.bios() == world.bios()


def test_world_edit_refuses_bad_input():
    graph = load_world().graph
    subject, obj, key = next(iter(graph.edges(keys=True)))
    relation = graph.edges[subject, obj, key]["relation"]
    for args, needle in [(("nobody", relation, obj), "no node"), ((subject, "no_relation", obj), "no 'no_relation'"),
                         ((subject, relation, "nothing:here"), "no node"), ((subject, relation, obj), "already")]:
        with pytest.raises(KelocateError, match=needle):
            edit_world(graph, *args)


# ---------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def study(organism):
    """One small study: ROME edited there and back (3 facts, 1 round) and the revert control."""
    from kelocate.studies.recovery import RecoverySettings, run_recovery

    start = weights.state_hash(organism)
    result = run_recovery(organism, RecoverySettings(methods=("rome",), facts=3, rounds=1, batch=(),
                                                     control=("rome",), unrelated=20,
                                                     editors={"rome": {"mom2_n_samples": 1000}}))
    return result, start, weights.state_hash(organism)


def test_measures_are_zero_for_an_unchanged_model(organism):
    from kelocate.organism.datasets import organism_cases, organism_world
    from kelocate.studies.recovery_probes import measure, recovery_probes, reference

    world = organism_world(organism, "")
    probes = recovery_probes(organism, world, organism_cases(organism, world, 3), unrelated=10)
    ref = reference(organism, probes)
    row = measure(organism, probes, ref, weights.snapshot(organism, [weights.mlp_out_name(5)]))
    assert row["distance_mean"] == 0.0 and row["kl"] == 0.0
    base = ref.summary()
    assert all(row[k] == base[k] for k in base)
    assert row["other_retained"] == 1.0 and len(probes.others) > 1000  # every other known fact of the world


def test_edit_and_edit_back_moves_the_model(study):
    result, _, _ = study
    (rome, control) = result.runs
    assert (rome.mode, control.mode) == ("single", "revert") and rome.error is None
    row = rome.rounds[0]
    assert row["edit_success"] > 0 and row["distance_mean"] > 0 and row["kl"] > 0
    assert rome.parameters == [weights.mlp_out_name(5)]


def test_revert_control_is_exact(study):
    result, _, _ = study
    row = result.runs[1].rounds[0]
    assert row["distance_mean"] == 0.0 and row["kl"] == 0.0
    assert all(row[k] == v for k, v in result.baseline.items())


def test_model_is_restored_after_the_study(study, organism):
    result, start, end = study
    assert result.restored and start == end == result.state_hash
    assert result.world[0]["identical"] and result.world[0]["distance"] == 0


def test_result_json_round_trip_and_figure(study, tmp_path):
    from kelocate.plots.recovery import draw_recovery
    from kelocate.studies.recovery import RecoveryResult

    result, _, _ = study
    path = result.save(tmp_path / "recovery.json")
    again = RecoveryResult.from_json(json.loads(path.read_text()))
    assert again.to_json() == result.to_json()
    (png,) = draw_recovery(result.to_json(), tmp_path / "recovery")
    assert png.suffix == ".png" and png.read_bytes()[:4] == b"\x89PNG"


def test_settings_refuse_what_the_study_cannot_run():
    from kelocate.studies.recovery import RecoverySettings

    for settings, needle in [(RecoverySettings(methods=("ice",), batch=(), control=()), "serves"),
                             (RecoverySettings(methods=("rome",), batch=("rome",), control=()), "one fact at a time"),
                             (RecoverySettings(methods=("mend",), batch=(), control=()), "--trained mend"),
                             (RecoverySettings(facts=0), "at least 1 fact")]:
        with pytest.raises(KelocateError, match=needle):
            settings.check()


def test_cli_tiny_run(tmp_path, capsys):
    from kelocate.cli import main

    out = tmp_path / "rec"
    assert main(["study", "recovery", "--methods", "ft-m", "--batch", "none", "--control", "none", "--facts", "2",
                 "--rounds", "1", "--unrelated", "5", "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["restored"] and [r["label"] for r in data["runs"]] == ["FT-M"]
    assert json.loads((out / "recovery.json").read_text()) == data
    assert (out / "recovery.png").stat().st_size > 0
    assert main(["study", "recovery", "--methods", "ice", "--out", str(out)]) == 2
