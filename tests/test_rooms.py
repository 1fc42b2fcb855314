"""The rooms of DESIGN.md section 1: imports only go down.

`model/` knows nothing of kelocate above it (only `errors` and `atomic`); `locate/` never imports the
organism, `studies/` or `edit/`, and `edit/` never imports `locate/`, `studies/` or the organism (editors
take layers as numbers; the organism hands its training text to the model at load). Checked on the
import statements themselves (the AST), not by grep, so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kelocate"

ALLOWED = {
    "model": ("kelocate.model", "kelocate.errors", "kelocate.atomic"),
    "locate": ("kelocate.locate", "kelocate.model", "kelocate.errors", "kelocate.atomic"),
    "edit": ("kelocate.edit", "kelocate.model", "kelocate.errors", "kelocate.atomic"),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n for n in names if n == "kelocate" or n.startswith("kelocate.")]


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_imports_only_go_down(room):
    bad = []
    for path in sorted((PACKAGE / room).rglob("*.py")):
        for name in _imports(path):
            if not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED[room]):
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not bad, "\n".join(bad)
