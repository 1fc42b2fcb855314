"""The README's and the docs/ pages' Python examples run as written (on the shipped organism), their links
point at files and headings that exist, and the README's set-up lines are the ones `.ci/run` runs.

Every ```python block of a page runs, in the order of the page, in one namespace per page (a page's blocks
build on each other; pages do not), from an empty working folder (files the examples write, such as an edit
record, land there)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
CI = ROOT / ".ci" / "run"


def blocks(path: Path, language: str) -> list[str]:
    """The page's fenced code blocks of one language, in order."""
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def run_examples(path: Path, capsys) -> tuple[dict, str]:
    """Run the page's Python blocks in one namespace; return it and what they printed."""
    from kelocate.organism import checkpoint_dir

    checkpoint = checkpoint_dir() / "config.json"
    assert checkpoint.is_file(), f"the shipped organism checkpoint is missing: {checkpoint}"  # fails, never skips
    code = blocks(path, "python")
    assert code, f"{path.name} has no python examples"
    namespace: dict = {}
    for block in code:
        exec(compile(block, str(path), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace, capsys.readouterr().out


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace, out = run_examples(README, capsys)
    assert "Japan" in out
    assert namespace["result"].clean_score > 0.5
    assert "France" in out and (tmp_path / "smap.safetensors").is_file()  # the edit example edited and saved
    assert not namespace["record"].applied


def test_tracing_page_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace, out = run_examples(ROOT / "docs" / "tracing.md", capsys)
    assert "Japan" in out
    assert namespace["result"].clean_score > 0.5
    assert 0.0 <= namespace["p"].max() <= 1.0
    assert namespace["knocked"].item() < 0.5 * namespace["result"].clean_score  # the knockout bites


def test_methods_page_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace, out = run_examples(ROOT / "docs" / "methods.md", capsys)
    assert "France" in out and (tmp_path / "smap.safetensors").is_file()
    assert not namespace["record"].applied


def test_every_page_with_python_examples_is_run():
    """A new page with examples gets its own test above (with what its examples must show)."""
    tested = {"tracing.md", "methods.md"}
    assert {page.name for page in DOCS if blocks(page, "python")} == tested


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_links_point_at_files_and_headings_that_exist(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an outside address
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        assert linked.is_file(), f"{page.name}: link to a missing file {target}"
        if anchor:
            headings = re.findall(r"^#+ (.*)$", re.sub(r"```.*?```", "", linked.read_text(), flags=re.S), flags=re.M)
            assert anchor in {slug(h) for h in headings}, f"{page.name}: link to a missing heading {target}"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_named_paths_exist(page):
    """Every repository path a page names in backticks (a module, a benchmark, a config) exists: renames
    reach the documentation."""
    named = re.findall(r"`((?:kelocate|benchmarks|studies|examples|tests|docs|\.ci)/[^`\s]*)`", page.read_text())
    missing = [path for path in named if "<" not in path and not (ROOT / path).exists()]
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_readme_setup_lines_are_what_ci_runs():
    ci_lines = {line.strip() for line in CI.read_text().splitlines()}
    setup = blocks(README, "bash")[0].strip().splitlines()
    assert len(setup) == 3
    for line in setup:
        assert line.strip() in ci_lines, f"the README's set-up line is not in .ci/run: {line}"
