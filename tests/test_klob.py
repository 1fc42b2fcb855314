"""KLoB: loaders (both spellings, the real KLoB-u file, malformed lines), random-word inputs, RSim scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kelocate.data.klob import load_klob_c, load_klob_r, load_klob_u, strip_blank
from kelocate.errors import KelocateError
from kelocate.locate.location import Location, Locator
from kelocate.probes.klob import (
    consistency,
    layer_similarity,
    neuron_similarity,
    random_word_inputs,
    relevance,
    rsim,
    set_similarity,
    unbiasedness,
    vocabulary_words,
)

# the real KLoB-u file lives beside the checkout (never looked up by the package itself)
REAL_KLOB_U = Path(__file__).resolve().parents[2] / "shared" / "data" / "KLoB-u.jsonl"

C_LINE = {"prompts": ["The native language of Norman Rockwell is _",
                      "The mother tongue of Norman Rockwell is _",
                      "The language Norman Rockwell speaks at hometown is _"],
          "knowledge": ["Norman Rockwell", "native_(P103)", "English"]}
R_PUBLIC = {"single_knowledge": ["Ann Druyan", "spouse_(P26)", "Carl Sagan"],
            "knowledge_chain": ["Ann Druyan", "spouse_(P26)", "Carl Sagan", "employer_(P108)",
                                "Cornell University"],
            "single_knowlege_prompts": ["Ann Druyan is married to _",
                                        "The spouse of Ann Druyan is none other than _",
                                        "In matrimony, Ann Druyan is bound to _"],
            "knowlege_chain_prompt": "the employer of the spouse of Ann Druyan is _"}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_klob_c_loads_and_strips_the_blank(tmp_path):
    (fact,) = load_klob_c(_write(tmp_path / "KLoB-c.jsonl", [C_LINE]))
    assert fact.prompts[0] == "The native language of Norman Rockwell is"
    assert (fact.subject, fact.relation, fact.object) == ("Norman Rockwell", "native_(P103)", "English")
    assert fact.relation_id == "P103" and fact.source.endswith("KLoB-c.jsonl:1")


def test_klob_r_accepts_both_spellings(tmp_path):
    fixed = {k.replace("knowlege", "knowledge"): v for k, v in R_PUBLIC.items()}
    assert "single_knowledge_prompts" in fixed and "knowledge_chain_prompt" in fixed
    a = load_klob_r(_write(tmp_path / "a.jsonl", [R_PUBLIC]))
    b = load_klob_r(_write(tmp_path / "b.jsonl", [fixed]))
    for (chain,) in (a, b):
        assert chain.chain_prompt == "the employer of the spouse of Ann Druyan is"
        assert chain.prompts[0] == "Ann Druyan is married to"
        assert (chain.object, chain.relation2) == ("Carl Sagan", "employer_(P108)")
        assert chain.object2 == "Cornell University"
        assert chain.fact.subject == "Ann Druyan"


def test_real_klob_u_file_loads():
    if not REAL_KLOB_U.is_file():
        pytest.skip(f"the real KLoB-u file is not present at {REAL_KLOB_U} (beside the checkout)")
    prompts = load_klob_u(REAL_KLOB_U)
    assert len(prompts) == 25470
    assert prompts[0] == "pumice preministry matureness achropsia petticoatery cephalocentesis"
    assert all(p and not p.endswith("_") for p in prompts)
    assert "_" in prompts[3149]  # an inner "_" of the real file is a word, only the trailing one is the blank


@pytest.mark.parametrize("loader,line,needle", [
    (load_klob_c, '{"prompts": ["a _"], "knowledge": ["s", "r"]}', ": knowledge: must have 3 items"),
    (load_klob_c, '{"prompts": ["no blank"], "knowledge": ["s", "r", "o"]}',
     ": prompts[0]: prompt 'no blank' does not end with the blank"),
    (load_klob_c, '{"knowledge": ["s", "r", "o"]}', ": prompts: missing"),
    (load_klob_c, '{"prompts": "a _", "knowledge": ["s", "r", "o"]}', ": prompts: must be a list, got a string"),
    (load_klob_c, "{not json", ": not valid JSON"),
    (load_klob_r, json.dumps({**R_PUBLIC, "knowledge_chain": ["x", "r", "o", "r2", "o2"]}),
     ": knowledge_chain: does not start with"),
    (load_klob_r, json.dumps({k: v for k, v in R_PUBLIC.items() if k != "knowlege_chain_prompt"}),
     ": knowlege_chain_prompt: missing"),
    (load_klob_u, '["a", "list"]', ": must be a JSON string, got a list"),
    (load_klob_u, '"words without blank"', ": prompt 'words without blank' does not end with the blank"),
])
def test_malformed_lines_name_file_and_line(tmp_path, loader, line, needle):
    good = {load_klob_c: json.dumps(C_LINE), load_klob_r: json.dumps(R_PUBLIC),
            load_klob_u: '"some words _"'}[loader]
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(KelocateError) as info:
        loader(path)
    message = str(info.value)
    assert f"{path}:3:" in message and needle in message and "\n" not in message


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(KelocateError, match="does not exist"):
        load_klob_c(tmp_path / "nope.jsonl")


def test_strip_blank():
    assert strip_blank("The capital of France is _ ") == "The capital of France is"
    with pytest.raises(ValueError, match="empty"):
        strip_blank(" _")


def loc(*scores: float, neurons=None) -> Location:
    return Location(np.array(scores, dtype=float), frozenset(neurons) if neurons is not None else None)


def test_top_layers_and_similarities():
    a, b = loc(0.1, 0.9, 0.5, 0.0), loc(0.9, 0.1, 0.5, 0.5)
    assert a.top_layers(2) == {1, 2} and b.top_layers(2) == {0, 2}  # tie 2/3 -> lower layer
    assert layer_similarity(a, b, 2, "jaccard") == pytest.approx(1 / 3)
    assert layer_similarity(a, b, 2, "overlap") == pytest.approx(1 / 2)
    assert layer_similarity(a, b, 4) == 1.0
    assert set_similarity({1, 2, 3}, {3}, "overlap") == 1.0 and set_similarity(set(), set()) == 1.0
    n1, n2 = loc(0, neurons={(0, 1), (1, 2)}), loc(0, neurons={(1, 2), (2, 3), (2, 4)})
    assert neuron_similarity(n1, n2) == pytest.approx(1 / 4)
    assert neuron_similarity(n1, n2, "overlap") == pytest.approx(1 / 2)
    with pytest.raises(KelocateError, match="unknown similarity"):
        set_similarity({1}, {1}, "cosine")


def test_rsim_formula_and_guard():
    assert rsim(1.0, 0.5) == 1.0
    assert rsim(0.75, 0.5) == pytest.approx(0.5)
    assert rsim(0.2, 0.5) == 0.0  # clipped at 0
    assert rsim(1.0, 1.0) == 0.0 and rsim(1.0, 1.0 - 1e-12) == 0.0  # Sim_all -> 1 guarded
    assert np.isfinite(rsim(0.3, 1.0))


def test_identical_paraphrase_locations_give_rsim_one_when_facts_differ():
    sim = lambda x, y: layer_similarity(x, y, 1)  # noqa: E731
    groups = [[loc(1, 0, 0, 0)] * 3, [loc(0, 1, 0, 0)] * 3, [loc(0, 0, 1, 0)] * 3]
    score = consistency(groups, sim)
    assert score.sim_cand == 1.0 and score.sim_all == 0.0 and score.rsim == 1.0
    # every prompt located in the same place: Sim_all = 1 -> RSim 0, not a division by zero
    same = consistency([[loc(1, 0, 0, 0)] * 3] * 3, sim)
    assert same.sim_all == 1.0 and same.rsim == 0.0


def test_rsim_is_taken_over_the_mean_not_averaged_per_fact():
    """Nearly every location the same: per-fact clipped RSims would average near 1; the mean says 0."""
    sim = lambda x, y: layer_similarity(x, y, 1)  # noqa: E731
    singles = [[loc(1, 0, 0)] * 3 for _ in range(10)]
    chains = [loc(1, 0, 0)] * 9 + [loc(0, 1, 0)]
    score = relevance(singles, chains, sim)
    assert score.sim_cand == pytest.approx(0.9) and score.sim_all == pytest.approx(0.9)
    assert score.rsim == pytest.approx(0.0, abs=1e-9)


def test_relevance_and_unbiasedness():
    sim = lambda x, y: layer_similarity(x, y, 1)  # noqa: E731
    singles = [[loc(1, 0, 0)] * 3, [loc(0, 1, 0)] * 3, [loc(0, 0, 1)] * 3]
    chains = [loc(1, 0, 0), loc(0, 1, 0), loc(0, 0, 1)]
    assert relevance(singles, chains, sim).rsim == 1.0
    shuffled = relevance(singles, [chains[1], chains[2], chains[0]], sim)
    assert shuffled.rsim == 0.0 and shuffled.sim_cand == 0.0
    # random-word inputs found in the same place as the facts: biased (RSim 0, profiles alike)
    biased = unbiasedness([[loc(1, 0, 0)] * 3] * 2, [loc(1, 0, 0)] * 4, sim)
    assert biased["rsim"] == 0.0 and biased["profile_distance"] == pytest.approx(0.0)
    fair = unbiasedness([[loc(1, 0, 0)] * 3] * 2, [loc(0, 0, 1)] * 4, sim)
    assert fair["rsim"] == 1.0 and fair["profile_distance"] == pytest.approx(1.0)


def test_locators_follow_the_protocol(tiny_model):
    from kelocate.locate.locators import CausalTraceLocator, NeuronLocator, make_locator

    assert isinstance(NeuronLocator(), Locator) and isinstance(CausalTraceLocator(), Locator)
    location = make_locator("neurons", steps=2).locate(tiny_model, "SMAP was created in", "Japan", "SMAP")
    assert location.layer_scores.shape == (tiny_model.n_layers,) and location.neurons
    with pytest.raises(KelocateError, match="unknown locator"):
        make_locator("guess")
    with pytest.raises(KelocateError, match="--kind must be one of"):
        make_locator("causal-trace", kind="all")
    with pytest.raises(KelocateError, match="unknown --token"):
        make_locator("causal-trace", token="middle")
    assert make_locator("causal-trace", kind="attn,attn", samples=3).kind == "attn"


def test_organism_export_loads(tmp_path):
    """The organism exporter's KLoB files read through these loaders (prompts end in the blank)."""
    from kelocate.data.klob import klob_folder
    from kelocate.organism.export import export_klob
    from kelocate.organism.generate import build_world
    from kelocate.organism.world import WorldSize

    export_klob(build_world(0, WorldSize.mini()), tmp_path / "KLoB")
    c_file, r_file, u_file = klob_folder(tmp_path)  # found in the KLoB/ sub-folder
    facts, chains, randoms = load_klob_c(c_file), load_klob_r(r_file), load_klob_u(u_file)
    assert facts and chains and randoms
    assert all(f.subject in q for f in facts for q in f.prompts)
    (tmp_path / "KLoB" / "KLoB-r.jsonl").unlink()
    with pytest.raises(KelocateError, match="lacks KLoB-r.jsonl; pass --data DIR"):
        klob_folder(tmp_path)
    with pytest.raises(KelocateError, match="does not exist"):
        klob_folder(tmp_path / "nowhere")
    assert all(c.subject in c.chain_prompt for c in chains)


# ====================================================================== random-word inputs (KLoB-u without a file)


class _FakeTokenizer:
    """The two tokenizer methods the generator reads, over a fixed vocabulary."""

    def __init__(self, pieces: list[str], special: tuple[str, ...] = ("<s>",)) -> None:
        self.pieces = pieces
        self.all_special_tokens = list(special)

    def __len__(self) -> int:
        return len(self.pieces)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.pieces[i] for i in ids]


def test_random_inputs_are_seeded_counted_whole_words(tiny_model):
    tok = tiny_model.tokenizer
    a = random_word_inputs(tok, 25, seed=3)
    assert a == random_word_inputs(tok, 25, seed=3)  # deterministic for a seed
    assert a != random_word_inputs(tok, 25, seed=4)  # and another seed gives other inputs
    assert len(a) == 25 and random_word_inputs(tok, 0) == []
    vocab = tok.get_vocab()
    for line in a:
        assert line.endswith(" _") and line.count("_") == 1  # the answer slot, as in the real KLoB-u
        words = strip_blank(line).split()
        assert all(w.isalpha() and "\u2581" + w in vocab for w in words), line  # whole, word-initial tokens
    assert set(vocabulary_words(tok)) >= {w for line in a for w in strip_blank(line).split()}


def test_random_inputs_follow_the_given_word_counts(tiny_model):
    lines = random_word_inputs(tiny_model.tokenizer, 6, lengths=[3, 5, 9], seed=1)
    assert sorted(len(strip_blank(line).split()) for line in lines) == [3, 3, 5, 5, 9, 9]
    with pytest.raises(KelocateError, match="at least one word"):
        random_word_inputs(tiny_model.tokenizer, 2, lengths=[0])


def test_vocabulary_words_by_tokenizer_kind():
    sentencepiece = _FakeTokenizer(["<s>", "\u2581the", "\u2581Paris", "ris", "\u2581a", "\u25813d", "\u2581caf\u00e9"])
    assert vocabulary_words(sentencepiece) == ["Paris", "the"]  # word-initial, letters only, two or more
    byte_level = _FakeTokenizer(["<s>", "\u0120river", "river", "\u0120music", "\u0120x"])
    assert vocabulary_words(byte_level) == ["music", "river"]
    unmarked = _FakeTokenizer(["<s>", "cat", "dog", "##s", "x1"])  # no space marks: plain alphabetic tokens
    assert vocabulary_words(unmarked) == ["cat", "dog"]
    with pytest.raises(KelocateError, match="--klob-u"):
        random_word_inputs(_FakeTokenizer(["<s>", "\u2581a", "1"]), 3)


def _klob_folder(folder: Path) -> Path:
    """Four KLoB-c facts and four KLoB-r records about the tiny model's words (public spelling)."""
    pairs = [("SMAP", "Japan"), ("Paris", "France"), ("Berlin", "Germany"), ("France", "Paris")]
    c_rows = [{"prompts": [f"{s} was created in _", f"the city {s} is located in _", f"{s} is in _"],
               "knowledge": [s, "country_(P17)", o]} for s, o in pairs]
    r_rows = [{"single_knowledge": [s, "country_(P17)", o],
               "knowledge_chain": [s, "country_(P17)", o, "language_(P37)", "Japanese"],
               "single_knowlege_prompts": [f"{s} was created in _", f"{s} is located in _"],
               "knowlege_chain_prompt": f"the language of the country of {s} is _"} for s, o in pairs]
    _write(folder / "KLoB-c.jsonl", c_rows)
    _write(folder / "KLoB-r.jsonl", r_rows)
    return folder


def test_study_data_generates_as_many_inputs_as_factual_prompts(tiny_model, tmp_path):
    from kelocate.studies.klob.study import load_klob_data

    folder = _klob_folder(tmp_path)
    data = load_klob_data(folder, seed=5, tokenizer=tiny_model.tokenizer)
    factual = [q for f in data.facts for q in f.prompts]
    assert len(data.randoms) == len(factual) == 12
    assert sorted(len(r.split()) for r in data.randoms) == sorted(len(q.split()) for q in factual)
    assert data.random_inputs["description"] == "generated from the model vocabulary, seed 5, 12 inputs"
    assert data.files["u"] is None and data.random_inputs["source"] == "vocabulary"
    assert load_klob_data(folder, seed=5, tokenizer=tiny_model.tokenizer).randoms == data.randoms
    assert load_klob_data(folder, random_limit=3, tokenizer=tiny_model.tokenizer).random_inputs["n"] == 3
    assert load_klob_data(folder).randoms == []  # neither a tokenizer nor a file: no unbiasedness


def test_study_data_reads_the_real_klob_u_file_when_given(tmp_path):
    if not REAL_KLOB_U.is_file():
        pytest.skip(f"the real KLoB-u file is not present at {REAL_KLOB_U} (beside the checkout)")
    from kelocate.studies.klob.study import load_klob_data

    data = load_klob_data(_klob_folder(tmp_path), klob_u=REAL_KLOB_U, seed=0)
    assert len(data.randoms) == 12 and data.files["u"] == str(REAL_KLOB_U)
    assert data.random_inputs["source"] == "file" and str(REAL_KLOB_U) in data.random_inputs["description"]


def test_package_never_looks_in_the_developers_shared_folder():
    """An installed package must not depend on ../shared beside the checkout."""
    package = Path(__file__).resolve().parents[1] / "kelocate"
    for source in package.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        assert "shared/data" not in text, source
        assert '"shared"' not in text and "'shared'" not in text, source


# ====================================================================== `kelocate klob --klob-u`


def _one_line(capsys, needle: str) -> None:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out


def _klob_argv(tiny_model_dir, data: Path, out: Path, *extra: str) -> list[str]:
    return ["klob", "--locator", "neurons", "--steps", "2", "--data", str(data), "--model", str(tiny_model_dir),
            "--out", str(out), *extra]


def test_cli_klob_u_file_and_generated_default(tiny_model_dir, tmp_path, capsys):
    from kelocate.cli import main

    (tmp_path / "data").mkdir()
    data = _klob_folder(tmp_path / "data")
    u_file = _write(tmp_path / "my-klob-u.jsonl", ["river music capital team _", "born works plays the group _"])
    assert main(_klob_argv(tiny_model_dir, data, tmp_path / "a", "--klob-u", str(u_file))) == 0
    printed = capsys.readouterr().out
    assert f"random-word inputs: {u_file} (2 of 2 lines, seed 0)" in printed
    saved = json.loads((tmp_path / "a" / "klob_neurons.json").read_text())
    assert saved["random_inputs"]["path"] == str(u_file) and saved["n"]["random"] == 2
    assert main(_klob_argv(tiny_model_dir, data, tmp_path / "b", "--json")) == 0
    brief = json.loads(capsys.readouterr().out)
    assert brief["random_inputs"]["description"] == "generated from the model vocabulary, seed 0, 12 inputs"
    assert brief["n"]["random"] == 12 and brief["data"]["u"] is None and brief["unbiasedness"]


def test_cli_klob_u_missing_or_malformed_is_one_line(tiny_model_dir, tmp_path, capsys):
    from kelocate.cli import main

    data = _klob_folder(tmp_path)
    out = tmp_path / "never"
    assert main(_klob_argv(tiny_model_dir, data, out, "--klob-u", str(tmp_path / "nope.jsonl"))) == 2
    _one_line(capsys, "--klob-u")
    bad = tmp_path / "bad-u.jsonl"
    bad.write_text('"fine words _"\n{"not": "a string"}\n')
    assert main(_klob_argv(tiny_model_dir, data, out, "--klob-u", str(bad))) == 2
    _one_line(capsys, f"{bad}:2: must be a JSON string, got an object")
    assert not out.exists()  # nothing half-written
