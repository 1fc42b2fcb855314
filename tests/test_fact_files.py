"""Fact files as the source of a study's facts on any model: the known facts of a CounterFact file (ROME's
records, as published) on SmolLM2, the file as a knowledge graph whose edit-and-back is the identity, and the
recovery study run from the file on SmolLM2 (its measures zero for the control and positive for an editor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kelocate.errors import KelocateError
from kelocate.model import weights
from kelocate.organism.graph_edit import apply_edits, graph_distance, graphs_identical, round_trips
from kelocate.studies.known_facts import file_cases, file_facts, known_cases
from kelocate.studies.recovery import RecoverySettings, file_edits, file_world, run_recovery

COUNTERFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "counterfact" / \
    "counterfact_portability_gpt4.json"


@pytest.fixture(scope="module")
def counterfact(tmp_path_factory) -> Path:
    """The first 400 records of the published CounterFact file (SmolLM2 recalls about 4% of them; kept
    small: the recovery study measures recall over every fact of its file)."""
    if not COUNTERFACT.is_file():
        pytest.skip(f"the real CounterFact file is not at {COUNTERFACT}")
    path = tmp_path_factory.mktemp("cf") / "counterfact_400.json"
    path.write_text(json.dumps(json.loads(COUNTERFACT.read_text())[:400]))
    return path


def test_file_facts_and_the_graph_round_trip(counterfact):
    pool = file_facts(counterfact)
    assert 390 <= len(pool) <= 400 and all(c.request.ground_truth and c.request.target_new for c in pool)
    assert [c.request.prompt for c in file_facts(counterfact, seed=0)] == [c.request.prompt for c in pool]
    assert [c.request.prompt for c in file_facts(counterfact, seed=1)] != [c.request.prompt for c in pool]
    graph = file_world(pool)
    edits = file_edits(pool[:10])
    edited = apply_edits(graph, edits)
    assert graph_distance(graph, edited) == 2 * len({(e.subject, e.relation) for e in edits})
    trips = round_trips(graph, edits, rounds=2)
    assert [t["distance"] for t in trips] == [0, 0] and all(t["identical"] for t in trips)
    assert graphs_identical(apply_edits(edited, [e.reverse() for e in edits]), graph)


@pytest.mark.real
def test_known_cases_from_a_file_on_smollm2(smol, counterfact):
    from kelocate.model.scoring import score_targets

    cases = known_cases(smol, 3, path=counterfact)
    assert len(cases) == 3
    scores = score_targets(smol, [c.request.prompt for c in cases], [c.request.ground_truth for c in cases])
    assert all(s.correct for s in scores)  # every fact is one the model recalls
    assert all(c.paraphrases for c in cases)  # CounterFact's paraphrase prompts come along
    with pytest.raises(KelocateError, match="recalls the original answer of only"):
        file_cases(smol, counterfact, 400)


@pytest.mark.real
def test_recovery_from_a_file_on_smollm2(smol, counterfact):
    before = weights.state_hash(smol)
    settings = RecoverySettings(methods=("ft-m",), facts=2, rounds=1, batch=(), control=("ft-m",), unrelated=5)
    result = run_recovery(smol, settings, facts_file=counterfact)
    assert weights.state_hash(smol) == before and result.restored
    assert result.world[0]["distance"] == 0 and result.world[0]["forward_distance"] == 4
    assert result.baseline["other_recall"] == 1.0 and result.probes["others"] >= 1  # known = recalled
    single, control = result.runs
    assert single.rounds[0]["distance_mean"] > 0 and single.rounds[0]["kl"] > 0
    assert control.rounds[0]["distance_mean"] == 0 and control.rounds[0]["kl"] == 0
    assert control.rounds[0]["other_recall"] == 1.0
