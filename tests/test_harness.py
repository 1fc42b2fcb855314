"""General ability through lm-evaluation-harness (the study's Table 5 path): a local task in lm-eval's own
format, with a data file the test writes (nothing can be downloaded), scored on the organism and compared with
a plain loop over the same documents; then the same task measured inside a sequential study."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lm_eval")

from kelocate.errors import KelocateError  # noqa: E402
from kelocate.loading import load_model  # noqa: E402
from kelocate.model.scoring import score_targets  # noqa: E402
from kelocate.organism.datasets import organism_general_set, organism_world  # noqa: E402
from kelocate.studies.knowedit.harness import HarnessSpec, harness_scores  # noqa: E402


@pytest.fixture(scope="module")
def organism():
    return load_model(None)


def write_task(folder, docs) -> str:
    """A multiple-choice task in lm-eval's YAML format over a JSONL file (its cache kept in the folder)."""
    (folder / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "kelocate_recall.yaml").write_text(
        "task: kelocate_recall\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files: {{test: {folder / 'docs.jsonl'}}}\n"
        f"  cache_dir: {folder / 'cache'}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\n"
        "doc_to_target: label\n"
        "metric_list:\n"
        "  - metric: acc\n")
    return str(folder)


def recall_docs(model, n: int = 8) -> list[dict]:
    """The organism's own facts as two-way choices: the true answer against another fact's answer, the true
    one first in even documents and second in odd ones."""
    facts = organism_general_set(model, organism_world(model, "the test needs the organism"), (), n=2 * n).facts
    docs = []
    for i in range(n):
        (prompt, answer), (_, other) = facts[i], facts[n + i]
        choices = [answer, other] if i % 2 == 0 else [other, answer]
        docs.append({"question": prompt, "choices": choices, "label": choices.index(answer)})
    return docs


def test_lm_eval_accuracy_equals_a_plain_loop_over_the_documents(organism, tmp_path):
    docs = recall_docs(organism)
    include = write_task(tmp_path, docs)
    scores = harness_scores(organism, HarnessSpec(("kelocate_recall",), include=include))
    # the plain loop: each choice's log-likelihood after the question (lm-eval joins them with one space)
    right = 0
    for doc in docs:
        logprobs = [s.logprob for s in score_targets(organism, [doc["question"]] * 2, doc["choices"])]
        right += max(range(2), key=logprobs.__getitem__) == doc["label"]
    assert scores["harness.kelocate_recall.acc"] == pytest.approx(right / len(docs))
    assert right >= len(docs) // 2  # the organism knows its own facts (not a trivially empty comparison)
    with pytest.raises(KelocateError, match="lm-eval knows no task 'no_such_task'"):
        harness_scores(organism, HarnessSpec(("no_such_task",), include=include))


def test_a_sequential_study_measures_the_harness_task_before_and_after_the_edits(tmp_path):
    from kelocate.studies.knowedit.config import StudyConfig, check_config
    from kelocate.studies.knowedit.report import general_table
    from kelocate.studies.knowedit.runner import run_study
    from kelocate.studies.knowedit.store import read_results

    folder = tmp_path / "tasks"
    folder.mkdir()
    include = write_task(folder, recall_docs(load_model(None), 4))
    config = check_config(StudyConfig(methods=["ft-m"], tasks=["WikiData_recent"], cases=2, mode="sequential", n=2,
                                      curve=[2], general=True, harness_tasks=["kelocate_recall"],
                                      harness_include=include, generation=False, fluency=False))
    run_study(config, tmp_path / "run")
    (row,) = read_results(tmp_path / "run")
    assert "harness.kelocate_recall.acc" in row["general_before"] and "general_recall" in row["general_before"]
    assert "harness.kelocate_recall.acc" in row["curve"][-1]
    table = general_table([row])
    assert "harness.kelocate_recall.acc" in table and "recall of unrelated facts" in table
    with pytest.raises(KelocateError, match="set general = true"):
        check_config(StudyConfig(tasks=["ZsRE"], harness_tasks=["x"]))
