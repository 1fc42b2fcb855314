"""Benchmark export (KnowEdit six tasks, KLoB c/r/u) and the KnowEdit loaders reading them back."""

from __future__ import annotations

import json
import os

import pytest

from kelocate.data.facts import file_facts
from kelocate.data.knowedit import (
    EditCase,
    KnowEditSkipWarning,
    answers_of,
    detect_task,
    load_knowedit,
)
from kelocate.errors import KelocateError
from kelocate.organism.export import export, export_klob
from kelocate.organism.generate import build_world
from kelocate.organism.world import WorldSize

REQUIRED = {
    "WikiData_recent": {"subject", "prompt", "target_new", "portability"},
    "ZsRE": {
        "subject",
        "target_new",
        "prompt",
        "ground_truth",
        "rephrase_prompt",
        "cond",
        "locality",
        "portability",
    },
    "WikiBio": {"text", "labels", "concept", "locality"},
    "WikiData_counterfact": {"subject", "prompt", "target_new", "ground_truth", "portability", "locality"},
    "ConvSent": {"ent", "pos", "neg"},
}


@pytest.fixture(scope="module")
def world():
    return build_world(
        0,
        WorldSize(
            subjects=30,
            unseen_subjects=4,
            persons=20,
            cities=8,
            topics=6,
            private=6,
            unknown_private=2,
            retain=6,
            bio_persons=8,
        ),
    )


@pytest.fixture(scope="module")
def exported(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return out, export(world, out)


def _json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_knowedit_files_have_the_public_fields(exported):
    out, manifest = exported
    for task, fields in REQUIRED.items():
        for split in ("train", "test"):
            records = _json(out / manifest[f"{task}/{split}"]["path"])
            assert isinstance(records, list) and records, (task, split)
            for rec in records:
                assert fields <= set(rec), (task, set(rec))
    recent = _json(out / manifest["WikiData_recent/test"]["path"]) + _json(
        out / manifest["WikiData_recent/train"]["path"]
    )
    kinds = {k for r in recent for k in r["portability"]}
    assert kinds == {"Subject_Aliasing", "Reasoning", "Logical_Generalization"}
    assert any("locality" in r and r["locality"]["Relation_Specificity"] for r in recent)
    cf = _json(out / manifest["WikiData_counterfact/test"]["path"]) + _json(
        out / manifest["WikiData_counterfact/train"]["path"]
    )
    assert any("Forgetfulness" in r["locality"] for r in cf)
    assert all(isinstance(r["ground_truth"], str) and r["target_new"] != r["ground_truth"] for r in cf)
    zsre = _json(out / manifest["ZsRE/test"]["path"])
    assert all(r["prompt"].startswith("Question:") and r["cond"].endswith(r["prompt"]) for r in zsre)
    train, test = (_json(out / manifest[f"Sanitation/{s}"]["path"]) for s in ("train", "test"))
    assert set(train) == {"K_F", "K_R"} and set(test) == {"success", "locality"}
    for item in train["K_F"] + test["success"]:
        assert {"question", "ground_truth", "target_new", "subject"} <= set(item)
        assert item["target_new"] == "I don't know."


def test_klob_files(exported, world, tmp_path):
    out, _ = exported
    rows = [json.loads(line) for line in (out / "KLoB" / "KLoB-c.jsonl").read_text().splitlines()]
    assert rows and all(len(r["prompts"]) == 3 and len(r["knowledge"]) == 3 for r in rows)
    assert all(p.endswith(" _") for r in rows for p in r["prompts"])
    assert all(r["knowledge"][1].endswith(")") and "_(P" in r["knowledge"][1] for r in rows)
    chains = [json.loads(line) for line in (out / "KLoB" / "KLoB-r.jsonl").read_text().splitlines()]
    keys = {"single_knowledge", "knowledge_chain", "single_knowlege_prompts", "knowlege_chain_prompt"}
    assert chains and all(set(r) == keys for r in chains)
    assert all(r["knowledge_chain"][:3] == r["single_knowledge"] for r in chains)
    random_lines = [json.loads(line) for line in (out / "KLoB" / "KLoB-u.jsonl").read_text().splitlines()]
    assert all(isinstance(s, str) and s.endswith(" _") for s in random_lines)
    assert set(export_klob(world, tmp_path)) == {"KLoB-c", "KLoB-r", "KLoB-u"}
    assert (tmp_path / "KLoB-r.jsonl").read_text() == (out / "KLoB" / "KLoB-r.jsonl").read_text()


def test_export_is_deterministic(world, exported, tmp_path):
    out, manifest = exported
    export(world, tmp_path)
    for entry in manifest.values():
        assert (tmp_path / entry["path"]).read_bytes() == (out / entry["path"]).read_bytes()


def test_export_leaves_other_files_and_no_staging(world, exported, tmp_path):
    out, manifest = exported
    assert not [p for p in out.rglob(".*")]  # no staging folder or temporary file left behind
    (tmp_path / "precious.txt").write_text("keep me")
    export_klob(world, tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["KLoB-c.jsonl", "KLoB-r.jsonl", "KLoB-u.jsonl",
                                                          "precious.txt"]


def test_export_to_an_unwritable_folder_writes_nothing(world, tmp_path):
    from kelocate.atomic import WriteError

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(WriteError, match="choose another --out"):
        export(world, blocker / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.parametrize("where", ["below-a-file", "/proc/x"])
def test_cli_export_to_an_unwritable_folder_is_one_line(where, tmp_path, capsys):
    from kelocate.cli import main

    if where == "/proc/x" and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc on this system")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    out = str(blocker / "out") if where == "below-a-file" else where
    assert main(["organism", "export", "--out", out]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert repr(out) in lines[0] and "choose another --out" in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_loader_reads_all_six_tasks_back(exported):
    out, manifest = exported
    tasks = set()
    for key, entry in manifest.items():
        if key.startswith("KLoB"):
            continue
        cases = load_knowedit(out / entry["path"])
        task = key.split("/")[0]
        assert cases.task == task and not cases.skipped
        assert cases and all(isinstance(c, EditCase) and c.task == task for c in cases)
        if task != "Sanitation":
            assert len(cases) == entry["records"]
        tasks.add(task)
        for c in cases:
            assert c.prompt and c.target_new
            if task not in ("ConvSent", "Sanitation"):
                assert c.subject in c.prompt
    assert tasks == {"WikiData_recent", "ZsRE", "WikiBio", "WikiData_counterfact", "ConvSent", "Sanitation"}
    zsre = load_knowedit(out / manifest["ZsRE/test"]["path"])
    assert all(c.rephrase and c.ground_truth and "cond" in c.extra for c in zsre)
    sanit = load_knowedit(out / manifest["Sanitation/train"]["path"])
    assert all(c.prompt.startswith("Question:") and c.prompt.endswith("\nAnswer:") for c in sanit)
    assert all(c.locality["Retain"] for c in sanit)
    counterfact = out / manifest["WikiData_counterfact/test"]["path"]
    facts, _ = file_facts(counterfact)
    assert facts and all(f.subject in f.prompt and f.answer for f in facts)
    assert [f.source for f in facts] == [c.label for c in load_knowedit(counterfact)]
    assert facts[0].source.startswith(f"{counterfact.name}[")
    recent, _ = file_facts(out / manifest["WikiData_recent/test"]["path"])
    assert recent and all(f.answer is None for f in recent)


def test_nested_aliases_and_missing_keys(tmp_path):
    records = [
        {
            "subject": "Leo",
            "prompt": "The city of Leo is",
            "target_new": "Berlin",
            "portability": {
                "Reasoning": [{"prompt": "Leo speaks", "ground_truth": [["German", "Deutsch"], ["Ger"]]}],
                "Subject_Aliasing": [],
            },
            "locality": {},
        },
        {"subject": "Ada", "prompt": "Ada works as a", "target_new": "pilot"},
    ]
    path = tmp_path / "recent.json"
    path.write_text(json.dumps(records))
    cases = load_knowedit(path)
    assert cases.task == "WikiData_recent"
    assert cases[0].portability["Reasoning"][0].answers == ("German", "Deutsch", "Ger")
    assert cases[0].portability["Reasoning"][0].ground_truth == "German"
    assert "Subject_Aliasing" not in cases[0].portability and cases[0].locality == {}
    assert cases[1].portability == {} and cases[1].ground_truth is None
    assert answers_of([["a"], "b"]) == ("a", "b")
    assert detect_task({"K_F": []}) == "Sanitation"


def test_subject_missing_from_prompt_is_skipped_and_reported(exported, tmp_path):
    out, manifest = exported
    records = _json(out / manifest["WikiData_counterfact/test"]["path"])
    records[1]["subject"] = "Nobody Anywhere"
    path = tmp_path / "cf.json"
    path.write_text(json.dumps(records))
    with pytest.warns(KnowEditSkipWarning, match="index 1"):
        cases = load_knowedit(path)
    assert len(cases) == len(records) - 1
    assert [(s.file, s.index) for s in cases.skipped] == [(str(path), 1)]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "cannot tell which KnowEdit task"),
        ('{"foo": 1}', "cannot tell which KnowEdit task"),
        ('[{"subject": "A", "prompt": "A is", "target_new": "x"}, 5]', r"\[1\]: must be a JSON object, got a number"),
        (
            '[{"subject": "A", "prompt": "A is", "target_new": "x"}, {"subject": "B", "target_new": "y"}]',
            r"\[1\]: prompt: missing; a WikiData_recent record has",
        ),
        (
            '[{"subject": "A", "prompt": "A is", "target_new": "x", '
            '"locality": {"Relation_Specificity": [3]}}]',
            r"\[0\]: locality.Relation_Specificity\[0\]: must be an object",
        ),
        ('[{"subject": "A", "prompt": "A is", "target_new": 7}]', r"\[0\]: target_new: must be a string or a list"),
        ('{"K_F": 3, "K_R": []}', r"\[K_F\]: must be a list of questions"),
        ('{"K_F": [{"question": "Who?"}], "K_R": [{"ground_truth": "x"}]}', r"\[K_R\]\[0\]: question: missing"),
    ],
)
def test_malformed_files_raise_kelocate_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(KelocateError, match=message) as info:
        load_knowedit(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_loader_errors_for_missing_file_and_unknown_task(tmp_path):
    with pytest.raises(KelocateError, match="does not exist"):
        load_knowedit(tmp_path / "nope.json")
    path = tmp_path / "x.json"
    path.write_text("[]")
    with pytest.raises(KelocateError, match="unknown KnowEdit task"):
        load_knowedit(path, task="trivia")
    assert load_knowedit(path, task="zsre") == []
