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
            "--suppress", "--control", "3", "--json", "--out", str(out)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed["neurons"] == saved["neurons"] and printed["refined_p"] is not None
    iv = printed["intervention"]
    assert iv["action"] == "suppress" and len(iv["before"]) == 3 and iv["random_control"]["draws"] == 3
    assert "exp of the sum of the log-probs" in printed["target_description"]


def test_neurons_table_output(tiny_model_dir, capsys):
    assert main(["neurons", PROMPT, "--answer", "Japan", "--model", str(tiny_model_dir), "--steps", "2",
                 "--top-k", "4", "--enhance", "--control", "2"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "4 neuron(s)" in out and "enhancing (x2)" in out and "random neurons in the same layers" in out


@pytest.mark.parametrize("extra,needle", [
    (["--suppress", "--enhance"], "exclude each other"),
    (["--steps", "0"], "--steps"),
    (["--threshold", "2"], "--threshold"),
    (["--target", "odds"], "unknown --target"),
    (["--layer", "9"], "layer 9 does not exist"),
    (["--engine", "magic"], "unknown IG engine"),
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
