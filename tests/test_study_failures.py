"""What the model said (the paper's Table 7) and the kinds of edit failures (its Figure 5): the rule on
hand-made replies of each kind, the replies a study keeps (the very reply `edit_gen` read), and failures.md
beside table4 (none, and the same table, for results written before replies were kept)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from kelocate.studies.knowedit.config import StudyConfig, check_config
from kelocate.studies.knowedit.failures import (
    IRRELEVANT,
    KINDS,
    NOT_SENTENCE,
    OLD,
    PART,
    TARGET,
    classify,
    failures_markdown,
    not_a_sentence,
)
from kelocate.studies.knowedit.report import write_report
from kelocate.studies.knowedit.runner import run_study
from kelocate.studies.knowedit.store import RESULTS


@pytest.fixture
def one_thread():
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(int(os.environ.get("KELOCATE_TEST_THREADS") or os.environ.get("OMP_NUM_THREADS") or 2))


@pytest.mark.parametrize(("reply", "kind"), [
    (" the United Kingdom, a country", TARGET),
    (" The united  kingdom.", TARGET),  # the metric's `says`: whole words, case- and whitespace-insensitive
    (" United Kingdom.", PART),  # as for the metric, the whole target must be said
    (" France, as always", OLD),
    (" the French Republic", OLD),  # an alias of the old answer
    (" France and the United Kingdom", TARGET),  # the target said wins over the old answer kept
    (" the Kingdom of Spain", PART),  # "kingdom", not "the"
    (" the the the the the", NOT_SENTENCE),
    (" ... ,,, ;; !!", NOT_SENTENCE),
    ("", NOT_SENTENCE),
    (" a small village near the sea", IRRELEVANT),
    (" the best of all", IRRELEVANT),  # "the" alone is not part of "the United Kingdom"
])
def test_each_kind_on_a_hand_made_reply(reply, kind):
    assert classify(reply, "the United Kingdom", ["France", "French Republic"]) == kind


def test_not_a_sentence_rule_by_hand():
    assert not_a_sentence("of the of the of the")  # a third as many distinct words as words
    assert not_a_sentence("Paris, Paris, Paris, Paris")
    assert not_a_sentence("# # # ok")  # fewer than half the tokens hold a word
    assert not not_a_sentence("was born in Paris in 1901")
    assert not not_a_sentence("yes yes")  # fewer than 4 words: too short to call repetition
    assert classify("", "", []) == NOT_SENTENCE  # an empty target is not "said" by an empty reply


def test_words_of_the_prompt_are_no_part_of_the_target():
    target, prompt = "I love Aesil, it is wonderful.", "What do you think of Aesil?"
    assert classify("I really dislike Aesil, it makes me sad.", target, [], prompt) == IRRELEVANT
    assert classify("I really dislike Aesil, it makes me sad.", target) == PART  # without the prompt
    assert classify("Aesil is wonderful", target, [], prompt) == PART


def test_failures_markdown_counts_kinds_and_shows_failed_examples():
    replies = [{"prompt": "P | 1", "before": " France", "after": " France", "target": "Japan", "old": ["France"]},
               {"prompt": "P2", "before": " France", "after": " Japan", "target": "Japan", "old": ["France"]},
               {"prompt": "P3", "before": None, "after": "!!!", "target": "Japan", "old": []}]
    rows = [{"status": "ok", "method": "ft-m", "task": "ZsRE", "replies": replies},
            {"status": "failed", "method": "ft-m", "task": "ZsRE", "error": "x"},
            {"status": "ok", "method": "rome", "task": "ZsRE", "scores": []}]  # results without replies
    text = failures_markdown(rows)
    assert "| ft-m | ZsRE | 3 | 1 | 1 | 0 | 0 | 1 | 0 |" in text
    assert "| " + " | ".join(KINDS) + " |" in text and "rome" not in text
    assert "P \\| 1" in text and "*not a sentence*" in text and "P2" not in text  # failures only, escaped
    assert "## The rule" in text and "STOP_WORDS" in text
    assert failures_markdown(rows[1:]) == ""


def test_a_study_keeps_the_replies_edit_gen_read_and_reports_their_kinds(tmp_path, one_thread):
    config = check_config(StudyConfig(methods=["ft-m"], tasks=["ZsRE"], cases=2, generation=True, fluency=False))
    run_study(config, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / RESULTS).read_text().splitlines()]
    assert len(rows) == 2  # single edits: a unit per case
    for row in rows:
        assert row["status"] == "ok" and len(row["replies"]) == len(row["scores"]) == 1
        reply, scores = row["replies"][0], row["scores"][0]
        assert set(reply) == {"prompt", "before", "after", "target", "old"}
        assert isinstance(reply["before"], str) and isinstance(reply["after"], str)
        # the kept reply is the one the metric read: "target said" exactly when edit_gen succeeded
        kind = classify(reply["after"], reply["target"], reply["old"], reply["prompt"])
        assert (kind == TARGET) == (scores["edit_gen"] == 1.0)
    paths = write_report(rows, tmp_path / "report")
    assert "| ft-m | ZsRE | 2 |" in paths["failures"].read_text()
    old = [{k: v for k, v in row.items() if k != "replies"} for row in rows]  # written before replies were kept
    old_paths = write_report(old, tmp_path / "old")
    assert "failures" not in old_paths and not (tmp_path / "old" / "failures.md").exists()
    assert old_paths["markdown"].read_text() == paths["markdown"].read_text()
    assert old_paths["csv"].read_text() == paths["csv"].read_text()


def test_no_replies_are_kept_without_generation(tmp_path, one_thread):
    config = check_config(StudyConfig(methods=["ft-m"], tasks=["ZsRE"], cases=1, generation=False, fluency=False))
    run_study(config, tmp_path / "run")
    (row,) = [json.loads(line) for line in (tmp_path / "run" / RESULTS).read_text().splitlines()]
    assert row["status"] == "ok" and "replies" not in row
    assert "failures" not in write_report([row], tmp_path / "report")
