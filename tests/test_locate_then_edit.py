"""Located layers feed the editors (`kelocate.locate_then_edit`): layers='auto' picks the layer (or MEMIT's range)
from single-layer effects of a valid trace, refuses an invalid trace with its reason, and records where
the layers came from in the edit record."""

from __future__ import annotations

import numpy as np
import pytest

from kelocate import trace
from kelocate.edit import EditRequest, editor
from kelocate.errors import KelocateError
from kelocate.locate.causal_trace.problem import severed_key
from kelocate.locate_then_edit import auto_layers, locate_and_edit
from kelocate.model import weights

REQUEST = EditRequest("SMAP was created in", "SMAP", "France", ground_truth="Japan")


def test_single_layer_is_the_strongest_single_layer_mlp_effect(organism):
    layers, origin = auto_layers(organism, REQUEST, 1, token="last", samples=4)
    result = trace(organism, REQUEST.prompt, REQUEST.subject, answer="Japan", kinds="mlp", samples=4)
    row = result.window_grid("mlp", "single")[result.token_index("last")]
    assert layers == [int(np.nanargmax(row))]  # plain argmax over layers restored alone
    assert origin["source"] == "trace" and origin["window"] == "single" and origin["token_label"] == "␣in"


def test_range_is_where_the_mlps_carry_most_of_the_hidden_effect(organism):
    layers, origin = auto_layers(organism, REQUEST, 3, token="last", samples=4)
    result = trace(organism, REQUEST.prompt, REQUEST.subject, answer="Japan", kinds="hidden", severed="mlp",
                   samples=4)
    row = result.token_index("last")
    gap = result.grid("hidden")[row] - result.grid(severed_key("mlp"))[row]
    best = max(range(organism.n_layers - 2), key=lambda s: (sum(gap[s:s + 3]), -s))  # a plain loop
    assert layers == [best, best + 1, best + 2]
    assert len(origin["range_sums"]) == organism.n_layers - 2


def test_auto_edit_records_the_trace_and_reverts(organism):
    original = weights.state_hash(organism)
    record = locate_and_edit(organism, editor("rome"), REQUEST, layers="auto", samples=4)
    try:
        assert record.layer_origin["source"] == "trace" and record.layer_origin["token"] == "last"
        assert record.layers == [int(np.argmax(record.layer_origin["effects"]))]
    finally:
        record.revert()
    assert weights.state_hash(organism) == original


def test_an_invalid_trace_is_refused_with_its_reason(organism):
    # the subject ends the prompt: every cell restores the clean run trivially, nothing is located
    bad = EditRequest("The language of Japan", "Japan", "French")
    with pytest.raises(KelocateError, match="auto layers: .*locates nothing"):
        locate_and_edit(organism, editor("rome"), bad, layers="auto", samples=2)


def test_over_a_data_set_effects_are_averaged_and_invalid_traces_counted(organism):
    other = EditRequest("The language of Japan is", "Japan", "French", ground_truth="Japanese")
    bad = EditRequest("The language of Japan", "Japan", "French")
    layers, origin = auto_layers(organism, [REQUEST, other, bad], 1, token="last", samples=4)
    assert origin["traced"] == 2 and len(origin["refused"]) == 1 and "locates nothing" in origin["refused"][0]["reason"]
    rows = [np.array(auto_layers(organism, r, 1, token="last", samples=4)[1]["effects"])
            for r in (REQUEST, other)]
    mean = (rows[0] + rows[1]) / 2  # the average of the two single-request effect rows
    np.testing.assert_allclose(origin["effects"], mean, atol=1e-5)
    assert layers == [int(np.argmax(mean))]
    with pytest.raises(KelocateError, match="none of the 2 traces is valid"):
        auto_layers(organism, [bad, bad], 1, samples=2)
