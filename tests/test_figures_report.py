"""`kelocate study figures`: sections computed once and read from the cache after, figures redrawn from the
data alone, sections a model cannot run say why, a failing section does not stop the others, the report is
self-contained and opens in a real browser (headless Chromium) with every image decoded and no error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from kelocate.errors import KelocateError
from kelocate.studies.figures import FiguresSettings, make_figures
from kelocate.studies.figures import steps as figure_steps

SMALL = dict(trace_facts=3, samples=2, klob_limit=3, study_cases=1, recovery_facts=2, recovery_rounds=1,
             locate_facts=2, weights_facts=2)


def _browser() -> str:
    """The headless browser binary; CI (.ci/run installs Debian's chromium) fails without it, elsewhere skip."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("KELOCATE_REQUIRE_BROWSER") == "1":
        pytest.fail("no chromium on PATH; install it (apt-get install chromium), as .ci/run does")
    pytest.skip("no chromium on PATH (apt-get install chromium)")


def _open(browser: str, page) -> dict[str, int]:
    """Load `page` in headless Chromium and read what the report's own check wrote on <html>."""
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120,
                          check=True)
    head = re.search(r"<html[^>]*>", done.stdout).group(0)
    return {k: int(v) for k, v in re.findall(r'data-(images|images-ok|errors)="(\d+)"', head)}


@pytest.fixture(scope="module")
def made(organism, tmp_path_factory):
    folder = tmp_path_factory.mktemp("figures")
    run = make_figures(organism, folder, FiguresSettings(**SMALL), only=["case", "klob"])
    return run, folder


def test_sections_are_computed_then_read_from_the_cache(organism, made, monkeypatch):
    run, folder = made
    assert [s.name for s in run.sections] == ["klob", "case"] and not run.failed
    assert all(not s.cached and s.figures and s.description.caption for s in run.sections)
    assert (folder / "data" / "case.json").is_file() and run.report == folder / "report.html"
    shutil.rmtree(folder / "figures")  # a rerun redraws every figure from the cached data alone

    def refuse(ctx):
        raise AssertionError("recomputed a cached section")

    patched = [s if s.name not in ("case", "klob") else
               figure_steps.Step(s.name, s.title, s.key, refuse, s.draw, s.describe) for s in figure_steps.STEPS]
    monkeypatch.setattr("kelocate.studies.figures.run.STEPS", tuple(patched))
    again = make_figures(organism, folder, FiguresSettings(**SMALL), only=["case", "klob"])
    assert all(s.cached and s.figures and all(p.is_file() for p in s.figures) for s in again.sections)
    assert [s.description.caption for s in again.sections] == [s.description.caption for s in run.sections]


def test_a_changed_setting_recomputes(organism, tmp_path):
    first = make_figures(organism, tmp_path, FiguresSettings(**SMALL), only=["case"])
    second = make_figures(organism, tmp_path, FiguresSettings(**(SMALL | {"samples": 3})), only=["case"])
    third = make_figures(organism, tmp_path, FiguresSettings(**(SMALL | {"samples": 3})), only=["case"])
    assert [s.cached for s in (*first.sections, *second.sections, *third.sections)] == [False, False, True]


def test_report_opens_in_a_real_browser(made, tmp_path):
    browser = _browser()
    run, folder = made
    text = run.report.read_text()
    assert "src=\"http" not in text and "<script src" not in text  # self-contained: nothing fetched
    seen = _open(browser, run.report)
    assert seen["images"] == 3 and seen["images-ok"] == 3 and seen["errors"] == 0
    # the check is real: a page whose image does not decode is caught
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"base64,[A-Za-z0-9+/=]{20}", "base64,AAAA", text, count=1))
    seen = _open(browser, broken)
    assert seen["images"] == 3 and seen["images-ok"] == 2


def test_every_other_section_computes_draws_and_describes(organism, tmp_path):
    """The sections the cache tests above do not run, at the smallest sizes (MEND left out: no checkpoint)."""
    settings = FiguresSettings(**SMALL, train_mend=False)
    run = make_figures(organism, tmp_path, settings, only=["trace", "weights", "recovery", "locate_vs_edit",
                                                           "sequential"])
    assert not run.failed and not any(s.skipped for s in run.sections)
    by = {s.name: s for s in run.sections}
    assert [p.name for p in by["trace"].figures] == ["average_trace.png"]
    assert {p.name for p in by["weights"].figures} == {"weights_projection.png", "weights_heatmaps.png",
                                                       "weights_concentration.png"}
    methods = [row[0] for row in by["weights"].description.tables[0][1]]
    assert "rome" in methods and "mend" not in methods  # no checkpoint: no MEND row
    assert by["recovery"].description.answer.startswith(("no editor restores", "restored by"))
    assert "Pearson r" in by["locate_vs_edit"].description.answer
    assert by["sequential"].figures[0].name == "sequential_WikiData_counterfact.png"
    assert "FT-L's dW is" in by["weights"].description.answer
    assert not (tmp_path / "data" / "trained").exists()
    data = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert any(n.startswith("weights_") and n.endswith(".npz") for n in data)
    assert any(n.startswith("sequential_") and (tmp_path / "data" / n).is_dir() for n in data)


def test_sections_a_model_cannot_run_say_why(tiny_model, tmp_path):
    run = make_figures(tiny_model, tmp_path, FiguresSettings(**SMALL),
                       only=["trace", "weights", "recovery", "locate_vs_edit", "knowedit"])
    reasons = {s.name: s.skipped for s in run.sections}
    assert all(reasons.values()) and "--facts-file" in reasons["weights"] and "--facts-file" in reasons["recovery"]
    assert "Not made for this model" in run.report.read_text()


def test_a_failing_section_is_reported_and_the_others_go_on(organism, tmp_path, monkeypatch):
    def fail(ctx):
        raise KelocateError("this section broke")

    patched = tuple(figure_steps.Step(s.name, s.title, s.key, fail, s.draw, s.describe) if s.name == "klob" else s
                    for s in figure_steps.STEPS)
    monkeypatch.setattr("kelocate.studies.figures.run.STEPS", patched)
    run = make_figures(organism, tmp_path, FiguresSettings(**SMALL), only=["klob", "case"])
    assert [s.name for s in run.failed] == ["klob"] and run.sections[1].figures
    assert "this section broke" in run.report.read_text()


def test_cli_refuses_bad_input(tmp_path, capsys):
    from kelocate.cli import main

    for args, needle in [(["--only", "bogus"], "unknown section 'bogus'"),
                         (["--facts-file", str(tmp_path / "none.json")], "does not exist"),
                         (["--samples", "0"], "--samples must be at least 1"),
                         (["--out", str(tmp_path / "f"), "--only", "case", "--klob-limit", "1"], "--klob-limit")]:
        file_out = ["--out", str(tmp_path / "out")] if "--out" not in args else []
        assert main(["study", "figures", *args, *file_out]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err and err.count("\n") == 1
    (tmp_path / "file").write_text("x")
    assert main(["study", "figures", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_cli_makes_the_report(tmp_path, capsys):
    from kelocate.cli import main

    assert main(["study", "figures", "--only", "case", "--samples", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "report:" in out and (tmp_path / "report.html").is_file()
    assert (tmp_path / "figures" / "case" / "case_traces.png").is_file()
