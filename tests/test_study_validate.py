"""The study's loaders on the real published files in ../shared/data (read exactly as published) and on
hand-written ROME CounterFact records, and `kelocate study validate`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from kelocate.cli import main
from kelocate.data.knowedit import ROME_COUNTERFACT, KnowEditSkipWarning, load_knowedit, summary
from kelocate.errors import KelocateError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = {  # file -> (task, records, cases)
    "knowedit/recent_train.json": ("WikiData_recent", 570, None),
    "knowedit/ZsRE-test-all.json": ("ZsRE", 1304, 1301),
    "knowedit/wikibio-test-all.json": ("WikiBio", 306, None),
    "knowedit/train_cf.json": ("WikiData_counterfact", 1428, None),
    "knowedit/blender_test.json": ("ConvSent", 800, None),
    "knowedit/trivia_qa_test.json": ("Sanitation", None, None),
    "counterfact/counterfact_portability_gpt4.json": (ROME_COUNTERFACT, 1031, 1031),
}
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="the shared real data folder (../shared/data) is absent")


@needs_data
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_files_are_recognised_and_read_as_published(name):
    task, records, cases = REAL[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KnowEditSkipWarning)  # ZsRE's three are checked below
        loaded = load_knowedit(DATA / name)
    facts = summary(loaded)
    assert facts["task"] == task and facts["cases"] > 0
    if records is not None:
        assert facts["records"] == records
    if cases is not None:
        assert facts["cases"] == cases


@needs_data
def test_zsre_reports_the_three_records_whose_subject_is_not_in_the_prompt():
    with pytest.warns(KnowEditSkipWarning):
        facts = summary(load_knowedit(DATA / "knowedit/ZsRE-test-all.json"))
    assert [s["index"] for s in facts["skipped"]] == [396, 597, 676]
    assert set(facts["portability"]) == {"Reasoning", "Subject_Aliasing", "Logical_Generalization"}


@needs_data
def test_rome_counterfact_fills_the_subject_placeholder_and_keeps_every_prompt():
    cases = load_knowedit(DATA / "counterfact/counterfact_portability_gpt4.json")
    first = cases[0]
    assert first.prompt == "Spike Hughes originates from" and first.subject == "Spike Hughes"
    assert (first.target_new, first.ground_truth) == ("Philadelphia", "London")
    assert len(first.extra["paraphrases"]) == 2 and first.rephrase == first.extra["paraphrases"][0]
    assert len(first.locality["Neighborhood"]) == 10
    assert all(p.answers == ("London",) for p in first.locality["Neighborhood"])
    assert first.portability["One_Hop"][0].answers == ("Cheesesteaks",)


def test_convsent_edits_alternate_between_a_positive_and_a_negative_opinion(tmp_path):
    path = tmp_path / "convsent.json"
    path.write_text(json.dumps([{"ent": t, "pos": [f" I love {t}. ", " "], "neg": [f" I hate {t}. "]}
                                for t in ("SMAP", "Paris", "Berlin")]))
    cases = load_knowedit(path)
    assert [c.extra["sentiment"] for c in cases] == ["positive", "negative", "positive"]
    assert (cases[0].target_new, cases[0].ground_truth) == ("I love SMAP.", "I hate SMAP.")  # stripped
    assert (cases[1].target_new, cases[1].ground_truth) == ("I hate Paris.", "I love Paris.")
    assert cases[0].extra["pos"] == ["I love SMAP."]  # an empty reply is no reply


def rewrite(prompt: str = "{} was born in", subject: str = "Ada", **more) -> dict:
    return {"case_id": 1, "requested_rewrite": {"prompt": prompt, "subject": subject, "relation_id": "P19",
                                                "target_new": {"str": "Rome", "id": "Q1"},
                                                "target_true": {"str": "Paris", "id": "Q2"}}, **more}


def test_hand_written_counterfact_records(tmp_path):
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([rewrite(paraphrase_prompts=["Ada's birthplace is"], neighborhood_prompts=[]),
                                rewrite("Someone was born in"),  # no placeholder: the subject is absent
                                rewrite(portability={})]))
    with pytest.warns(KnowEditSkipWarning, match="index 1"):
        cases = load_knowedit(path)
    assert cases.task == ROME_COUNTERFACT and len(cases) == 2
    assert cases[0].prompt == "Ada was born in" and cases[0].locality == {} and cases[0].portability == {}
    assert [(s.index, s.reason) for s in cases.skipped] == [(1, "subject 'Ada' does not occur in the prompt")]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"case_id": 1, "requested_rewrite": {"prompt": "{} x", "subject": "A"}}]))
    with pytest.raises(KelocateError, match="target_true"):
        load_knowedit(broken, task="rome-counterfact")


def test_validate_reports_counts_and_skips_and_a_truncated_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([rewrite(), rewrite("Someone was born in")]))
    assert main(["study", "validate", str(path), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["task"] == ROME_COUNTERFACT and (facts["records"], facts["cases"]) == (2, 1)
    assert facts["missing"]["rephrase"] == 1 and facts["skipped"][0]["index"] == 1
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps([rewrite(), rewrite()])[:70])
    assert main(["study", "validate", str(truncated)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(truncated) in err and "line 1, column" in err
