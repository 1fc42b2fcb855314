"""The one record reader (`kelocate.data.records`) and its one error format `FILE:RECORD: FIELD: PROBLEM`,
as every reader of a user's file reports it: a malformed JSON line, a missing field and a wrong type are
each one line naming the file, the record and the field."""

from __future__ import annotations

import json

import pytest

from kelocate.data.facts import file_facts, read_fact_file
from kelocate.data.general import load_general_set
from kelocate.data.records import RecordError, field, parse_lines, read_records, strings
from kelocate.data.training import read_training_file
from kelocate.errors import KelocateError


def _error(call, *args) -> str:
    with pytest.raises(KelocateError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_lines_are_numbered_as_in_the_file_and_list_items_by_index(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n   \n"x\u2028y"\r\n[1, 2]\n')  # blank lines count; U+2028 is inside a string
    records = read_records(path)
    assert [(r.locator, r.index, r.value) for r in records] == [(":1", 0, {"a": 1}), (":4", 1, "x\u2028y"),
                                                                 (":5", 2, [1, 2])]
    assert records[1].where == f"{path}:4" and records[1].label == "r.jsonl:4"
    listed = tmp_path / "r.json"
    listed.write_text(json.dumps([{"a": 1}, {"a": 2}]))
    assert [r.where for r in read_records(listed)] == [f"{listed}[0]", f"{listed}[1]"]
    single = tmp_path / "one.json"
    single.write_text('{"a": 1}')
    assert [(r.where, r.value) for r in read_records(single)] == [(str(single), {"a": 1})]
    assert [r.locator for r in read_records(listed.rename(tmp_path / "lines.txt"), lines=False)] == ["[0]", "[1]"]


def test_a_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "facts.jsonl"
    path.write_text('{"prompt": "a b", "subject": "a"}\n\n{"prompt": oops}\n')
    message = _error(read_records, path)
    assert message.startswith(f"{path}:3: not valid JSON (") and "each line must be one JSON value" in message
    assert _error(file_facts, path).startswith(f"{path}:3: not valid JSON")
    doc = tmp_path / "facts.json"
    doc.write_text('[{"prompt": "a b",\n "subject": }]')
    assert _error(read_records, doc).startswith(f"{doc}: not valid JSON (line 2, column 13")
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b'"\xff"\n')
    assert "not UTF-8" in _error(read_records, binary)
    assert "does not exist" in _error(read_records, tmp_path / "nope.jsonl")
    missing = _error(read_records, tmp_path / "nope.jsonl", "fact file", None, "pass --facts FILE")
    assert missing == f"fact file {str(tmp_path / 'nope.jsonl')!r} does not exist; pass --facts FILE"


def test_lines_read_elsewhere_parse_with_their_numbers(tmp_path):
    """A reader that picks its lines itself (the study store) gets the same records and the same errors."""
    path = tmp_path / "results.jsonl"
    records = parse_lines([(1, b'{"a": 1}'), (2, b""), (3, '"b"')], path)
    assert [(r.where, r.index, r.value) for r in records] == [(f"{path}:1", 0, {"a": 1}), (f"{path}:3", 1, "b")]
    message = _error(parse_lines, [(1, b'{"a": 1}'), (2, b"{oops")], path, "delete that line")
    assert message.startswith(f"{path}:2: not valid JSON (") and message.endswith("; delete that line")
    assert _error(parse_lines, [(4, b'"\xff"')], path).startswith(f"{path}:4: not UTF-8 text")


def test_a_missing_field_names_file_record_and_field(tmp_path):
    facts = tmp_path / "controls.jsonl"
    facts.write_text('{"prompt": "The capital of Japan is", "answer": "Tokyo"}\n{"prompt": "The sky is"}\n')
    assert _error(read_fact_file, facts).startswith(f"{facts}:2: answer: missing or empty; a fact looks like")
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps([{"prompt": "SMAP was created in", "target_new": "France"}]))
    assert _error(read_training_file, edits).startswith(f"{edits}[0]: subject: missing; each edit looks like")
    general = tmp_path / "general.jsonl"
    general.write_text('{"prompt": "SMAP was created in"}\n')
    assert _error(load_general_set, general, None).startswith(f"{general}:1: answer: missing; each line is one")
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{"prompt": "SMAP was created in", "subject": "SMAP"}, {"subject": "SMAP"}]))
    assert _error(file_facts, plain).startswith(f"{plain}[1]: prompt: missing")


def test_a_wrong_type_names_file_record_and_field(tmp_path):
    facts = tmp_path / "controls.json"
    facts.write_text(json.dumps([{"prompt": "The sky is", "answer": 3}]))
    assert _error(read_fact_file, facts).startswith(f"{facts}[0]: answer: must be a string, got a number")
    edits = tmp_path / "edits.jsonl"
    edits.write_text(json.dumps({"prompt": "SMAP was created in", "subject": "SMAP", "target_new": "France",
                                 "paraphrases": "SMAP is from"}) + "\n")
    assert _error(read_training_file, edits).startswith(f"{edits}:1: paraphrases: must be a list, got a string")
    edits.write_text(json.dumps({"prompt": "SMAP was created in", "subject": "SMAP", "target_new": "France",
                                 "neighbours": [["SMAP plays", "music"], ["only a prompt"]]}) + "\n")
    assert _error(read_training_file, edits).startswith(f"{edits}:1: neighbours[1]: must be a [prompt, answer]")
    edits.write_text("[1, 2]\n")
    assert _error(read_training_file, edits).startswith(f"{edits}:1: must be a JSON object, got a list")
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"prompt": "SMAP was created in", "subject": ["SMAP"]}) + "\n")
    assert _error(file_facts, plain).startswith(f"{plain}:1: subject: must be a string, got a list")


def test_field_getters(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": "s", "b": true, "c": ["x ", "y"], "knowlege": 1}\n')
    (record,) = read_records(path)
    value = record.value
    assert field(record, value, "a") == "s" and field(record, value, "z", default=None) is None
    assert field(record, value, ("knowledge", "knowlege"), int) == 1  # the first spelling present
    with pytest.raises(RecordError, match=r"x.jsonl:1: b: must be a number, got true/false$"):
        field(record, value, "b", int)
    with pytest.raises(RecordError, match=r":1: knowledge: missing; hint$"):
        field(record, value, ("knowledge", "knowlegde"), hint="hint")
    assert strings(record, value["c"], "c") == ["x", "y"] and strings(record, value["c"], "c", strip=False)[0] == "x "
    with pytest.raises(RecordError, match=r":1: c: must have 3 items, found 2"):
        strings(record, value["c"], "c", 3)


def test_training_files_plain_and_knowedit(tmp_path):
    plain = tmp_path / "edits.jsonl"
    plain.write_text(json.dumps({"prompt": "SMAP was created in", "subject": "SMAP", "target_new": "France",
                                 "ground_truth": "Japan", "paraphrases": [" SMAP is from"],
                                 "unrelated": ["The sky is"], "neighbours": [["SMAP plays", "music"]]}) + "\n")
    (record,) = read_training_file(plain)
    assert (record.prompt, record.subject, record.target_new, record.ground_truth) == \
        ("SMAP was created in", "SMAP", "France", "Japan")
    assert record.paraphrases == (" SMAP is from",) and record.unrelated == ("The sky is",)
    assert record.neighbours == (("SMAP plays", "music"),) and record.source == "edits.jsonl:1"
    plain.write_text(json.dumps({"prompt": "SMAP was created in", "subject": "Japan", "target_new": "France"}))
    assert "subject: 'Japan' does not occur in the prompt" in _error(read_training_file, plain)
    sanitation = tmp_path / "sanitation.json"
    sanitation.write_text(json.dumps({"K_F": [{"question": "Who wrote SMAP?", "ground_truth": "A",
                                               "subject": "SMAP"}], "K_R": []}))
    (record,) = read_training_file(sanitation)
    assert record.prompt == "Question:Who wrote SMAP?\nAnswer:" and record.target_new == "I don't know."
    assert record.subject == "SMAP" and record.source == "sanitation.json[0]"
    assert "--pool" in _error(read_training_file, tmp_path / "none.json", "--pool")
