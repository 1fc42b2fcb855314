"""CLI: `kelocate neurons` and `kelocate klob` on a tiny random model; mistakes give one line, exit 2."""

from __future__ import annotations

import json

import pytest

from kelocate.cli import main

PROMPT = "SMAP was created in"
SUBJECTS = ("SMAP", "Paris", "Berlin", "France")
OBJECTS = ("Japan", "France", "Germany", "Paris")


def _one_error_line(capsys, needle: str) -> None:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error:") and needle in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out


@pytest.fixture(scope="module")
def klob_dir(tmp_path_factory):
    """A small KLoB-c / KLoB-r / KLoB-u folder in the public formats (public "knowlege" spelling)."""
    folder = tmp_path_factory.mktemp("klob")
    with open(folder / "KLoB-c.jsonl", "w") as fh:
        for s, o in zip(SUBJECTS, OBJECTS, strict=True):
            prompts = [f"{s} was created in _", f"the city {s} is located in _", f"{s} is in _"]
            fh.write(json.dumps({"prompts": prompts, "knowledge": [s, "country_(P17)", o]}) + "\n")
    with open(folder / "KLoB-r.jsonl", "w") as fh:
        for s, o in zip(SUBJECTS, OBJECTS, strict=True):
            fh.write(json.dumps({
                "single_knowledge": [s, "country_(P17)", o],
                "knowledge_chain": [s, "country_(P17)", o, "language_(P37)", "Japanese"],
                "single_knowlege_prompts": [f"{s} was created in _", f"{s} is located in _", f"{s} is in _"],
                "knowlege_chain_prompt": f"the language of the country of {s} is _"}) + "\n")
    (folder / "KLoB-u.jsonl").write_text('"river music capital team _"\n"born works plays the group _"\n')
    return folder


def test_neurons_json_and_out_file(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "kn.json"
    argv = ["neurons", PROMPT, "--answer", "Japan", "--model", str(tiny_model_dir), "--steps", "4",
            "--paraphrase", "SMAP is a group created in", "--paraphrase", "the group SMAP was created in",
            "--suppress", "--control", "3", "--json", "--out", str(out)]  # an integer: random, 3 draws
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed["neurons"] == saved["neurons"] and printed["refined_p"] is not None
    iv = printed["intervention"]
    assert iv["action"] == "suppress" and len(iv["before"]) == 3 and iv["random_control"]["draws"] == 3
    assert iv["control"] == "random" and iv["specificity"] is None and saved["intervention"] == iv
    assert "exp of the sum of the log-probs" in printed["target_description"]


def test_neurons_table_output(tiny_model_dir, capsys):
    assert main(["neurons", PROMPT, "--answer", "Japan", "--model", str(tiny_model_dir), "--steps", "2",
                 "--top-k", "4", "--enhance", "--draws", "2"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "4 neuron(s)" in out and "enhancing (x2)" in out and "random neurons in the same layers" in out
    # a random model is no organism: no same-relation facts, said in a note
    assert "note: no other facts of this relation are known here" in out


@pytest.mark.parametrize("extra,needle", [
    (["--suppress", "--enhance"], "exclude each other"),
    (["--steps", "0"], "--steps"),
    (["--threshold", "2"], "--threshold"),
    (["--target", "odds"], "unknown --target"),
    (["--layer", "9"], "layer 9 does not exist"),
    (["--engine", "magic"], "unknown IG engine"),
    (["--suppress", "--control-prompt", "The capital of France is"], "is not PROMPT=>ANSWER"),
    (["--suppress", "--control-prompt", "=>Paris"], "is not PROMPT=>ANSWER"),
    (["--suppress", "--unrelated-prompt", "The sky is=> "], "--unrelated-prompt"),
    (["--control-prompt", "The capital of France is=>Paris"], "add --suppress or --enhance"),
    (["--suppress", "--control", "random", "--control-prompt", "a=>b"], "need --control same-relation"),
    (["--suppress", "--control", "sideways"], "unknown --control"),
    (["--suppress", "--control", "same-relation"], "no organism world"),
    (["--relation", "capital"], "--facts FILE"),
])
def test_neurons_user_mistakes(tiny_model_dir, extra, needle, capsys):
    assert main(["neurons", PROMPT, "--answer", "Japan", "--model", str(tiny_model_dir), *extra]) == 2
    _one_error_line(capsys, needle)


def test_neurons_bad_model_and_out(tiny_model_dir, tmp_path, capsys):
    assert main(["neurons", PROMPT, "--answer", "Japan", "--model", str(tmp_path / "none")]) == 2
    _one_error_line(capsys, "neither a local directory")
    assert main(["neurons", PROMPT, "--answer", "Japan", "--model", str(tiny_model_dir), "--out",
                 str(tmp_path)]) == 2
    _one_error_line(capsys, "is a folder")
    assert main(["neurons", PROMPT, "--answer", " ", "--model", str(tiny_model_dir)]) == 2
    _one_error_line(capsys, "answer is empty")


def test_neurons_control_prompts_and_notes(tiny_model_dir, capsys):
    argv = ["neurons", PROMPT, "--answer", "Japan", "--model", str(tiny_model_dir), "--steps", "2", "--top-k", "3",
            "-p", "SMAP is from", "--suppress", "--draws", "2",
            "--control-prompt", "Paris is a city in=>France", "--control-prompt", "Berlin is a city in => Germany",
            "--unrelated-prompt", "The language of Japan is=>Japanese"]
    assert main([*argv, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    spec = printed["intervention"]["specificity"]
    assert printed["intervention"]["control"] == "same-relation" and printed["intervention"]["random_control"]
    same, other = spec["groups"]["same_relation"], spec["groups"]["unrelated"]
    assert [(f["prompt"], f["answer"]) for f in same["facts"]] == [("Paris is a city in", "France"),
                                                                   ("Berlin is a city in", "Germany")]
    assert [f["prompt"] for f in other["facts"]] == ["The language of Japan is"] and other["n"] == 1
    assert spec["sources"] == {"same_relation": "command line", "unrelated": "command line"}
    assert spec["verdict"] and spec["relation"] is None
    # a random model knows nothing: both prompts and every control fact get a note
    assert any(n.startswith(f"the prompt {PROMPT!r} is not known") for n in printed["notes"])
    assert any(n.startswith("paraphrase 'SMAP is from' is not known") for n in printed["notes"])
    assert sum("control fact" in n for n in printed["notes"]) == 3
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "note: the prompt 'SMAP was created in' is not known to the model: p(Japan) =" in out
    assert "found │ same relation │ 2" in out and "found │ unrelated │ 1" in out
    assert "same relation facts, suppressing (x0) the found neurons" in out
    assert "specificity:" in out and "random neurons in the same layers" in out


@pytest.fixture(scope="module")
def organism_ready():
    from kelocate.organism import checkpoint_dir

    assert (checkpoint_dir() / "config.json").is_file(), "the shipped organism checkpoint is missing"


CAPITAL = "The capital of Japan is"


def test_neurons_organism_default_same_relation(organism_ready, capsys):
    from kelocate.organism.world import load_world

    capitals = {fp.prompt: fp.answer for fp in load_world().fact_prompts(split="known", templates="all")
                if fp.relation == "capital" and fp.template == "The capital of {s} is"}
    argv = ["neurons", CAPITAL, "--answer", "Tokyo", "--steps", "4", "--suppress", "--draws", "2"]
    assert main([*argv, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    iv = printed["intervention"]
    assert iv["control"] == "same-relation" and iv["random_control"]["draws"] == 2
    spec = iv["specificity"]
    same, other = spec["groups"]["same_relation"], spec["groups"]["unrelated"]
    assert same["n"] == 5 and other["n"] == 5 and spec["relation"] == "capital"
    assert all(capitals[f["prompt"]] == f["answer"] != "Tokyo" for f in same["facts"])
    assert not any(f["prompt"] in capitals for f in other["facts"])
    assert spec["verdict"] and spec["target_relative_change"] == pytest.approx(
        (iv["after"][0] - iv["before"][0]) / iv["before"][0])
    assert not any("not known" in n for n in printed["notes"])  # the organism knows its capitals
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "found │ same relation │ 5" in out and "found │ unrelated │ 5" in out and "specificity:" in out
    assert "other 'capital' facts (same relation), suppressing (x0) the found neurons" in out
    assert "the organism's world (known facts, seed 0)" not in out  # sources go to the JSON only


def test_neurons_facts_file(organism_ready, tmp_path, capsys):
    from kelocate.organism.world import load_world

    world = load_world()
    records = [{"prompt": fp.prompt, "subject": fp.subject, "answer": fp.answer, "relation": fp.relation}
               for fp in world.fact_prompts(split="known", templates="train", relations=["capital", "language"])
               if fp.template in ("The capital of {s} is", "The language of {s} is")]
    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["neurons", CAPITAL, "--answer", "Tokyo", "--steps", "2", "--suppress", "--facts", str(path),
                 "--control-facts", "3", "--json"]) == 0
    spec = json.loads(capsys.readouterr().out)["intervention"]["specificity"]
    by_prompt = {r["prompt"]: r for r in records}
    assert spec["relation"] == "capital" and spec["sources"]["same_relation"].startswith("--facts facts.jsonl")
    same, other = spec["groups"]["same_relation"]["facts"], spec["groups"]["unrelated"]["facts"]
    assert len(same) == 3 and all(by_prompt[f["prompt"]]["relation"] == "capital" for f in same)
    assert len(other) == 3 and all(by_prompt[f["prompt"]]["relation"] == "language" for f in other)
    assert all(by_prompt[f["prompt"]]["subject"] != "Japan" for f in same + other)
    # without relations, every record is a same-relation control
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{k: v for k, v in r.items() if k != "relation"} for r in records]))
    assert main(["neurons", CAPITAL, "--answer", "Tokyo", "--steps", "2", "--suppress", "--facts", str(plain),
                 "--control-facts", "8", "--json"]) == 0
    spec = json.loads(capsys.readouterr().out)["intervention"]["specificity"]
    assert list(spec["groups"]) == ["same_relation"] and spec["groups"]["same_relation"]["n"] == 8


def test_neurons_facts_file_mistakes(tiny_model_dir, tmp_path, capsys):
    base = ["neurons", PROMPT, "--answer", "Japan", "--model", str(tiny_model_dir), "--suppress"]
    assert main([*base, "--facts", str(tmp_path / "none.jsonl")]) == 2
    _one_error_line(capsys, "does not exist")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "b"}\n{oops\n')
    assert main([*base, "--facts", str(bad)]) == 2
    _one_error_line(capsys, "bad.jsonl:2: not valid JSON")
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([{"prompt": "a", "answer": "b", "relation": "r1"},
                                 {"prompt": "c", "answer": "d", "relation": "r2"}]))
    assert main([*base, "--facts", str(mixed)]) == 2
    _one_error_line(capsys, "pass --relation NAME")
    assert main([*base, "--facts", str(mixed), "--relation", "r3"]) == 2
    _one_error_line(capsys, "no fact of relation 'r3'")
    mixed.write_text(json.dumps([{"prompt": "a"}]))
    assert main([*base, "--facts", str(mixed)]) == 2
    _one_error_line(capsys, f"{mixed}[0]: answer: missing or empty")
    mixed.write_text(json.dumps([{"prompt": "a", "answer": "b"}, {"prompt": "c", "answer": 3}]))
    assert main([*base, "--facts", str(mixed)]) == 2
    _one_error_line(capsys, f"{mixed}[1]: answer: must be a string, got a number")


@pytest.mark.parametrize("locator", ["neurons", "causal-trace"])
def test_klob_draws_and_saves_curves(tiny_model_dir, klob_dir, tmp_path, locator, capsys):
    out = tmp_path / "res"
    argv = ["klob", "--locator", locator, "--data", str(klob_dir), "--klob-u", str(klob_dir / "KLoB-u.jsonl"),
            "--model", str(tiny_model_dir), "--steps", "2", "--samples", "2", "--out", str(out), "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    name = "klob_neurons" if locator == "neurons" else "klob_causal-trace_mlp"
    saved = json.loads((out / f"{name}.json").read_text())
    assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").stat().st_size > 0
    assert saved["k"] == [1, 2, 3] and printed["k"] == [1, 2, 3]
    for curve in ("consistency", "relevance", "unbiasedness"):
        assert len(saved[curve]) == 3 and all(0.0 <= v <= 1.0 for v in saved[curve])
        assert saved[curve][-1] == 0.0  # top-3 of 3 layers: every location is the same -> guarded to 0
    assert saved["n"] == {"facts": 4, "chains": 4, "random": 2, "prompts_located": 30, "prompts_planned": 30}


def test_klob_user_mistakes(tiny_model_dir, klob_dir, tmp_path, capsys):
    base = ["klob", "--model", str(tiny_model_dir)]
    assert main([*base, "--data", str(tmp_path / "nowhere")]) == 2
    _one_error_line(capsys, "does not exist")
    assert main([*base, "--locator", "oracle", "--data", str(klob_dir)]) == 2
    _one_error_line(capsys, "unknown locator")
    assert main([*base, "--similarity", "cosine", "--data", str(klob_dir)]) == 2
    _one_error_line(capsys, "unknown --similarity")
    assert main(base) == 2  # a random model has no organism export to default to
    _one_error_line(capsys, "--data DIR")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "KLoB-c.jsonl").write_text((klob_dir / "KLoB-c.jsonl").read_text() + "{oops\n")
    (bad / "KLoB-r.jsonl").write_text((klob_dir / "KLoB-r.jsonl").read_text())
    out = tmp_path / "never"
    assert main([*base, "--data", str(bad), "--out", str(out)]) == 2
    _one_error_line(capsys, "KLoB-c.jsonl:5: not valid JSON")
    assert not out.exists()  # nothing half-written
