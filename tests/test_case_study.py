"""The SMAP case (Figure 9): 'PROMPT=>ANSWER' parsing, the top-k overlap against plain loops, the chance
baseline against enumeration, the verdict rule on hand-made traces, the organism's default run, the figures and
`kelocate study case` (default run, refusal when an answer is not the model's, --force)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from kelocate.cli import main
from kelocate.errors import KelocateError
from kelocate.locate.causal_trace import TraceResult
from kelocate.probes.overlap import chance_similarity, overlap_curve, rsim_curve
from kelocate.studies.case import (
    Case,
    CasePrompt,
    CaseResult,
    compare_traces,
    kind_verdict,
    located_count,
    make_case,
    run_case,
)

SMAP = ("SMAP was created in", "The language of the country where SMAP was created is", "SMAP is a type of")


# ====================================================================== parsing


def test_parse_prompt_answer():
    assert CasePrompt.parse("SMAP was created in=>Japan") == CasePrompt("SMAP was created in", "Japan")
    assert CasePrompt.parse("  a  => b => Japan ") == CasePrompt("a => b", "Japan")  # splits at the last '=>'
    case = make_case("a SMAP=>x", ("SMAP b", "y"), CasePrompt("SMAP c", "z"), subject=" SMAP ")
    assert case.chain == CasePrompt("SMAP b", "y") and case.subject == "SMAP"


@pytest.mark.parametrize("text", ["SMAP was created in", "=>Japan", "SMAP was created in=>", "  =>  "])
def test_parse_errors_are_one_line_naming_the_option(text):
    with pytest.raises(KelocateError) as err:
        CasePrompt.parse(text, "--chain")
    message = str(err.value)
    assert "\n" not in message and "--chain" in message and "PROMPT=>ANSWER" in message


def test_make_case_rejects_bad_pairs_and_empty_subject():
    with pytest.raises(KelocateError, match="--unrelated"):
        make_case("a=>b", "c=>d", ("only one",))
    with pytest.raises(KelocateError, match="--subject"):
        make_case("a=>b", "c=>d", "e=>f", subject="  ")


# ====================================================================== overlap and baseline


def _plain(a: np.ndarray, b: np.ndarray, k: int, mode: str) -> float:
    """Top-k similarity by hand: sort, take k, count."""
    top_a = {int(i) for i in np.argsort(-a, kind="stable")[:k]}
    top_b = {int(i) for i in np.argsort(-b, kind="stable")[:k]}
    return len(top_a & top_b) / (len(top_a | top_b) if mode == "jaccard" else k)


@pytest.mark.parametrize("mode", ["jaccard", "overlap"])
def test_overlap_curve_matches_a_plain_loop(mode):
    rng = np.random.default_rng(0)
    for n in (1, 5, 12):
        a, b = rng.random(n), rng.random(n)
        ks = list(range(1, n + 1))
        assert overlap_curve(a, b, ks, mode) == pytest.approx([_plain(a, b, k, mode) for k in ks])
    with pytest.raises(KelocateError, match="layers"):
        overlap_curve(np.zeros(3), np.zeros(4), [1])


def test_compare_traces_overlap_matches_a_plain_loop():
    rng = np.random.default_rng(1)
    rows = {r: rng.random(8) for r in ("fact", "chain", "unrelated")}
    comp = compare_traces({r: fake_trace({"mlp": v}) for r, v in rows.items()})
    for a, b in (("fact", "chain"), ("fact", "unrelated"), ("chain", "unrelated")):
        assert comp.overlap["mlp"][f"{a}~{b}"] == pytest.approx([_plain(rows[a], rows[b], k, "jaccard")
                                                                 for k in range(1, 9)])
        depth = comp.depth["mlp"]
        assert comp.means["mlp"][f"{a}~{b}"] == pytest.approx(np.mean(comp.overlap["mlp"][f"{a}~{b}"][:depth]))
    assert comp.chance == pytest.approx([chance_similarity(8, k) for k in range(1, 9)])


@pytest.mark.parametrize("mode", ["jaccard", "overlap"])
def test_chance_similarity_is_the_mean_over_all_pairs_of_subsets(mode):
    n = 6
    for k in range(1, n + 1):
        subsets = [set(c) for c in itertools.combinations(range(n), k)]
        values = [len(a & b) / (len(a | b) if mode == "jaccard" else k) for a in subsets for b in subsets]
        assert chance_similarity(n, k, mode) == pytest.approx(float(np.mean(values)))
    with pytest.raises(KelocateError):
        chance_similarity(4, 5)


def test_rsim_curve_is_klobs_formula_with_the_guard():
    assert rsim_curve([0.5, 0.2, 1.0], [0.2, 0.4, 1.0]) == pytest.approx([(0.5 - 0.2) / 0.8, 0.0, 0.0])


# ====================================================================== the verdict on hand-made traces


def fake_trace(rows: dict[str, list[float]], corrupted: float = 0.0, problems: list[str] | None = None,
               strongest: int = 1) -> TraceResult:
    """A trace of 4 tokens (subject = tokens 1-2) whose row `strongest` holds each kind's given layer scores;
    the other subject token restores less, the other rows nothing."""
    grids = {}
    for kind, row in rows.items():
        grid = np.full((4, len(row)), corrupted)
        grid[strongest] = row
        grid[3 - strongest] = corrupted + 0.5 * (np.asarray(row) - corrupted)
        grids[kind] = grid
    return TraceResult("S T is", ["<s>", "S", "T", "is"], [0, 1, 2, 3], "S T", (1, 3), "x", 5, 1.0, corrupted,
                       grids, {"window": 1, "model": "hand-made"}, [], problems or [])


HIGH_LOW = [0.9, 0.8, 0.05, 0.02, 0.01, 0.0]  # locates layers 0 and 1
REVERSED = HIGH_LOW[::-1]  # locates layers 5 and 4


def test_entity_when_the_unrelated_fact_overlaps_as_much_as_the_chain():
    traces = {"fact": fake_trace({"mlp": HIGH_LOW}), "chain": fake_trace({"mlp": REVERSED}),
              "unrelated": fake_trace({"mlp": HIGH_LOW})}
    comp = compare_traces(traces)
    assert comp.depth["mlp"] == 2 and comp.rows["mlp"] == {"fact": 1, "chain": 1, "unrelated": 1}
    assert comp.means["mlp"]["fact~unrelated"] == 1.0 and comp.means["mlp"]["fact~chain"] == 0.0
    assert comp.kind_verdicts == {"mlp": "entity"} and comp.verdict.startswith("the locator finds the entity")


def test_fact_when_the_chain_overlaps_more():
    traces = {"fact": fake_trace({"mlp": HIGH_LOW}), "chain": fake_trace({"mlp": HIGH_LOW}),
              "unrelated": fake_trace({"mlp": REVERSED})}
    comp = compare_traces(traces)
    assert comp.kind_verdicts == {"mlp": "fact"} and "follows the fact" in comp.verdict


def test_neither_when_nothing_is_shared_beyond_chance_and_mixed_kinds():
    one_peak = [[1.0 if i == j else 0.0 for i in range(6)] for j in (0, 3, 5)]
    traces = {role: fake_trace({"mlp": peak, "attn": HIGH_LOW}) for role, peak in zip(
        ("fact", "chain", "unrelated"), one_peak, strict=True)}
    comp = compare_traces(traces, ["mlp", "attn"])
    assert comp.depth["mlp"] == 1 and comp.means["mlp"]["fact~chain"] == 0.0
    assert comp.kind_verdicts == {"mlp": "neither", "attn": "entity"}  # attn: all three identical
    assert comp.verdict.startswith("mixed:") and "attn" in comp.verdict and "mlp" in comp.verdict
    traces = {r: fake_trace({"mlp": p}) for r, p in zip(("fact", "chain", "unrelated"), one_peak, strict=True)}
    assert compare_traces(traces).verdict.startswith("cannot tell")


def test_the_rule_reads_the_margin_and_chance():
    means = {"fact~chain": 0.65, "fact~unrelated": 0.6, "chain~unrelated": 0.5}
    assert kind_verdict(means, chance=0.3) == "entity"  # fc - fu = 0.05 <= 0.1, fu well above chance
    assert kind_verdict(means, chance=0.55) == "neither"  # fu only 0.05 above chance
    assert kind_verdict(means | {"fact~chain": 0.8}, chance=0.3) == "fact"
    assert kind_verdict(means, chance=0.3, margin=0.01) == "fact"
    assert located_count(np.array([1.0, 0.1, 0.09, -1.0])) == 2 and located_count(np.zeros(3)) == 0


def test_invalid_trace_is_a_caveat_and_bad_options_are_one_line():
    traces = {"fact": fake_trace({"mlp": HIGH_LOW}), "chain": fake_trace({"mlp": HIGH_LOW}, problems=["no drop"]),
              "unrelated": fake_trace({"mlp": HIGH_LOW})}
    assert "caveat: the chain trace locates nothing (no drop)" in compare_traces(traces).verdict
    for bad in ({"token": "middle"}, {"similarity": "cosine"}, {"window": "wide"}, {"margin": 1.5}):
        with pytest.raises(KelocateError):
            compare_traces(traces, **bad)
    with pytest.raises(KelocateError, match="unrelated"):
        compare_traces({"fact": traces["fact"], "chain": traces["chain"]})


def test_the_strongest_subject_row_is_ranked_not_the_last():
    traces = {r: fake_trace({"mlp": HIGH_LOW}, strongest=1) for r in ("fact", "chain", "unrelated")}
    assert compare_traces(traces).rows["mlp"]["fact"] == 1
    assert compare_traces(traces, token="last_subject").rows["mlp"]["fact"] == 2


def test_case_figures_write_pngs(tmp_path):
    from kelocate.plots.case import save_case_figures

    traces = {"fact": fake_trace({"hidden": HIGH_LOW, "mlp": HIGH_LOW}),
              "chain": fake_trace({"hidden": REVERSED, "mlp": REVERSED}),
              "unrelated": fake_trace({"hidden": HIGH_LOW, "mlp": HIGH_LOW})}
    case = Case(CasePrompt("S T is", "x"), CasePrompt("S T is", "x"), CasePrompt("S T is", "x"), "S T")
    result = CaseResult("hand-made", case, "S T", "given", [], traces, compare_traces(traces))
    paths = save_case_figures(result, tmp_path, ("png", "pdf"))
    assert sorted(p.name for p in paths) == ["case_overlap.pdf", "case_overlap.png", "case_traces.pdf",
                                             "case_traces.png"]
    assert all(p.stat().st_size > 5000 for p in paths)


# ====================================================================== the organism


@pytest.fixture(scope="module")
def smap(organism):
    return run_case(organism, samples=3)


def test_organism_default_is_the_smap_triple_and_it_knows_it(smap):
    prompts = smap.case.prompts()
    assert tuple(cp.prompt for cp in prompts.values()) == SMAP
    assert [cp.answer for cp in prompts.values()] == ["Japan", "Japanese", "group"]
    assert smap.subject == "SMAP" and smap.all_known and all(t.valid for t in smap.traces.values())
    comp = smap.comparison
    assert comp.kinds == ["hidden", "mlp", "attn"] and comp.ks == list(range(1, smap.traces["fact"].n_layers + 1))
    assert set(comp.kind_verdicts.values()) <= {"entity", "fact", "neither"} and comp.verdict
    # the rankings read the strongest subject token, which is inside the subject in every prompt
    for kind in comp.kinds:
        for role, row in comp.rows[kind].items():
            lo, hi = smap.traces[role].subject_span
            assert lo <= row < hi


def test_organism_result_round_trips_through_json(smap, tmp_path):
    written = smap.save(tmp_path / "case")
    assert [p.name for p in written] == ["case.json", "case_traces.png", "case_overlap.png"]
    again = CaseResult.load(tmp_path / "case")
    assert json.dumps(again.summary(), sort_keys=True) == json.dumps(
        json.loads(json.dumps(smap.summary())), sort_keys=True)
    for role, t in smap.traces.items():  # the grids travel rounded to 6 decimals
        assert again.traces[role].kinds == t.kinds and again.traces[role].subject_span == t.subject_span
        for kind in t.kinds:
            np.testing.assert_allclose(again.traces[role].grid(kind), t.grid(kind), atol=1e-6)
    assert again.verdict == smap.verdict
    with pytest.raises(KelocateError, match="cannot read the case"):
        CaseResult.load(tmp_path / "nothing.json")


def test_subject_missing_from_a_prompt_is_one_line(organism):
    case = make_case("SMAP was created in=>Japan", "The language of Japan is=>Japanese", "SMAP is a type of=>group")
    with pytest.raises(KelocateError, match="not in the chain prompt"):
        run_case(organism, case, samples=1)


# ====================================================================== the command


def test_cli_default_run_writes_json_and_figures(tmp_path, capsys):
    out = tmp_path / "case"
    code = main(["study", "case", "--samples", "3", "--kind", "mlp", "--kind", "attn", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = json.loads(captured.out)
    assert printed["all_known"] and printed["kinds"] == ["mlp", "attn"] and printed["verdict"]
    assert printed["source"] == "the organism's SMAP case" and "traces" not in printed
    saved = json.loads((out / "case.json").read_text())
    assert saved["verdict"] == printed["verdict"] and set(saved["traces"]) == {"fact", "chain", "unrelated"}
    assert (out / "case_traces.png").stat().st_size > 5000 and (out / "case_overlap.png").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


WRONG = ["--fact", "SMAP was created in=>France", "--chain", f"{SMAP[1]}=>Japanese", "--unrelated", f"{SMAP[2]}=>group"]


def test_cli_refuses_an_answer_the_model_does_not_give(tmp_path, capsys):
    out = tmp_path / "case"
    code = main(["study", "case", *WRONG, "--samples", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "not the model's answer" in err and "'France'" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_cli_force_traces_anyway(tmp_path, capsys):
    out = tmp_path / "case"
    code = main(["study", "case", *WRONG, "--samples", "1", "--kind", "mlp", "--out", str(out), "--force"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "tracing anyway" in captured.err and "verdict:" in captured.out
    saved = json.loads((out / "case.json").read_text())
    assert not saved["all_known"] and not saved["traces_valid"]["fact"] and "caveat" in saved["verdict"]


@pytest.mark.parametrize(("args", "expected"), [
    (["--fact", "SMAP was created in=>Japan"], "missing --chain, --unrelated"),
    (["--fact", "SMAP was created in", "--chain", "a=>b", "--unrelated", "c=>d"], "--fact"),
    (["--kind", "neurons"], "unknown trace kind"),
    (["--token", "middle"], "unknown --token"),
    (["--similarity", "cosine"], "unknown similarity"),
])
def test_cli_bad_options_are_one_line(args, expected, tmp_path, capsys):
    code = main(["study", "case", *args, "--out", str(tmp_path / "case")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "case").exists()


def test_cli_other_models_need_a_triple(tiny_model_dir, tmp_path, capsys):
    code = main(["study", "case", "--model", str(tiny_model_dir), "--out", str(tmp_path / "case")])
    err = capsys.readouterr().err
    assert code == 2 and "no default case" in err and "--fact" in err
