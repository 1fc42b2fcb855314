"""kelocate.timing: phases add up inside a collection, never overlap, and nested collections report outward."""

from __future__ import annotations

import time

from kelocate import timing


def test_phases_outside_a_collection_cost_nothing_and_record_nothing():
    with timing.phase("target"):
        pass  # no collection open: nothing to record, no error


def test_a_phase_inside_another_counts_towards_the_outer_one_only():
    with timing.collecting() as seconds:
        with timing.phase("edit"):
            time.sleep(0.02)
            with timing.phase("target"):
                time.sleep(0.02)
        with timing.phase("scoring"):
            time.sleep(0.01)
    assert set(seconds) == {"edit", "scoring"}
    assert seconds["edit"] >= 0.04 and seconds["scoring"] >= 0.01


def test_an_inner_collection_reports_to_the_outer_one_unless_a_phase_holds_it():
    @timing.timed("keys")
    def keys() -> None:
        time.sleep(0.01)

    with timing.collecting() as outer:
        with timing.collecting() as inner:
            keys()
        assert set(inner) == {"keys"}
        with timing.phase("evaluate"), timing.collecting() as held:
            keys()
    assert held["keys"] >= 0.01
    assert outer["keys"] == inner["keys"]  # the held one was counted inside "evaluate" already
    assert outer["evaluate"] >= held["keys"]
