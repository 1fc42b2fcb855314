"""Traces that mean nothing are flagged, not located; single-layer effects beside windowed ones; located
layers at three tokens; subject inference that never picks a subject ending the prompt."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kelocate.cli import main
from kelocate.errors import KelocateError
from kelocate.locate.causal_trace import trace
from kelocate.locate.causal_trace.subject import infer_subject
from kelocate.locate.causal_trace.tracing import validity_problems


def test_validity_rules():
    assert validity_problems((1, 3), 6, 0.9, 0.1, 0.05) == []
    at_end = validity_problems((4, 6), 6, 0.9, 0.1, 0.05)
    assert len(at_end) == 1 and "last token" in at_end[0]
    raised = validity_problems((1, 3), 6, 0.148, 0.201, 0.05)  # the Apple case on SmolLM2
    assert len(raised) == 1 and "does not lower" in raised[0]
    assert validity_problems((1, 3), 6, 0.30, 0.26, 0.05)  # a drop below the threshold
    other = validity_problems((1, 3), 6, 0.2, 0.01, 0.05, other_top=" Paris", answer="Rome")
    assert len(other) == 1 and "does not predict 'Rome'" in other[0]


def test_a_valid_trace_locates_at_three_tokens_with_single_layer_effects(organism):
    result = trace(organism, "SMAP was created in", "SMAP", kinds="all", samples=3, window=3)
    assert result.valid and result.problems == []
    assert set(result.kinds) == {"hidden", "mlp", "attn", "mlp_single", "attn_single"}
    single = trace(organism, "SMAP was created in", "SMAP", kinds="mlp,attn", samples=3, window=1,
                   single_layer=False)
    for kind in ("mlp", "attn"):  # the single-layer grid is exactly a window-1 trace
        np.testing.assert_allclose(result.grids[f"{kind}_single"], single.grids[kind], atol=1e-6)
    located = result.located(3)
    for kind in result.kinds:
        assert set(located[kind]) == {"last_subject", "strongest_subject", "last"}
    strongest = located["mlp"]["strongest_subject"]
    assert strongest["token"] == result.peak("mlp")[0] and strongest["label"] == result.tokens[strongest["token"]]
    # editors read single-layer effects by default; the windowed ranking stays available
    row = result.grids["mlp_single"][result.token_index("last")]
    assert result.top_layers("mlp", 1, "last") == [int(np.argmax(row))]
    assert result.top_layers("mlp", 1, "last", window="windowed") == [
        int(np.argmax(result.grids["mlp"][result.token_index("last")]))]
    assert result.require_valid() is result


def test_invalid_traces_say_why_and_locate_nothing(organism, tmp_path):
    weak = trace(organism, "SMAP was created in", "SMAP", kinds="hidden", samples=2, noise=1e-4)
    assert not weak.valid and "does not lower" in weak.problems[0] and weak.located() == {}
    with pytest.raises(KelocateError, match="locates nothing"):
        weak.require_valid()
    at_end = trace(organism, "The language of Japan", "Japan", kinds="hidden", samples=2)
    assert any("last token" in p for p in at_end.problems)
    wrong = trace(organism, "SMAP was created in", "SMAP", answer="France", kinds="hidden", samples=2)
    assert any("does not predict 'France'" in p for p in wrong.problems)
    back = type(weak).load(weak.save(tmp_path / "weak")[0])
    assert back.problems == weak.problems and not back.valid


def test_cli_prints_not_located_for_an_invalid_trace(tmp_path, capsys):
    code = main(["trace", "SMAP was created in", "--subject", "SMAP", "--noise", "0.0001", "--kind", "hidden",
                 "--samples", "2", "--out", str(tmp_path), "--format", "png"])
    out = capsys.readouterr().out
    assert code == 0 and "not located:" in out and "located layers" not in out
    meta = json.loads((tmp_path / "smap_was_created_in.json").read_text())
    assert meta["valid"] is False and meta["problems"] and meta["located"] == {}


def test_cli_located_table_names_three_tokens(tmp_path, capsys):
    code = main(["trace", "SMAP was created in", "--kind", "mlp", "--samples", "3", "--window", "3",
                 "--out", str(tmp_path), "--format", "png"])
    out = capsys.readouterr().out
    assert code == 0 and "located layers" in out
    assert "last subject 'P'" in out and "strongest" in out and "last '␣in'" in out
    assert "mlp (window 3)" in out and "mlp (single layer)" in out


def test_dataset_average_skips_invalid_traces_and_lists_them(organism):
    from kelocate.data.facts import Fact
    from kelocate.locate.causal_trace.average import average_indirect_effect

    facts = [Fact("SMAP was created in", "SMAP", "Japan", "a"),
             Fact("The language of Japan", "Japan", None, "b")]  # subject ends the prompt
    avg = average_indirect_effect(organism, facts, kinds="hidden", samples=2)
    assert avg["n_facts"] == 1 and avg["skipped"]["invalid"] == 1
    assert avg["skipped_records"][0]["source"] == "b" and "last token" in avg["skipped_records"][0]["reason"]
    both = average_indirect_effect(organism, facts, kinds="hidden", samples=2, include_invalid=True)
    assert both["n_facts"] == 2 and both["skipped"]["invalid"] == 0


class _Named:
    """A stand-in model for subject inference: tokens are words, entity names given."""

    def __init__(self, names=()):
        self.entity_names = list(names)

    def encode(self, text):
        return text.split()

    def subject_span(self, prompt, subject):
        start = prompt[: prompt.rfind(subject)].count(" ")
        return start, start + len(subject.split())


@pytest.mark.parametrize(("prompt", "subject"), [
    ("Apple was founded by Steve", "Apple"),  # 'Steve' ends the prompt: never the subject
    ("Tesla was founded by Elon", "Tesla"),
    ("The Eiffel Tower is located in the city of", "Eiffel Tower"),
    ("The capital of Germany is", "Germany"),
    ("Where was SMAP created", "SMAP"),
])
def test_subject_inference_never_ends_the_prompt(prompt, subject):
    guess = infer_subject(_Named(), prompt)
    assert guess.subject == subject and guess.reason.endswith("check it")  # a heuristic: the user should look


def test_known_entities_come_first_and_never_end_the_prompt():
    model = _Named(["SMAP", "Japan"])
    assert infer_subject(model, "SMAP was created in Japan").subject == "SMAP"
    assert infer_subject(model, "The language of Japan is").method == "known entity"
