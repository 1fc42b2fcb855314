"""The rooms of DESIGN.md section 1: imports only go down, no circles, and only `model/` changes a model.

Checked on the code itself (the AST), not by grep, so a lazy import inside a function counts too:

- every module of the package belongs to a room, and each room imports only the rooms below it;
- no two modules import each other, directly or around a longer circle (module level and lazy imports alike);
- nothing outside `model/` assigns an attribute to a model object (`model.x = ...`): a model's provenance is
  set by the loader, and editors that serve answers push onto the model's serving stack instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kelocate"

FLOOR = ("kelocate.errors", "kelocate.atomic", "kelocate.display", "kelocate.timing")
# room -> the kelocate modules (and packages) it may import; a room may always import itself
ALLOWED: dict[str, tuple[str, ...]] = {
    "errors": (),
    "atomic": ("kelocate.errors",),
    "display": (),
    "timing": (),
    "model": FLOOR,
    "data": FLOOR,
    "plots": FLOOR,
    "locate": ("kelocate.model", *FLOOR),
    "edit": ("kelocate.model", "kelocate.data", *FLOOR),
    "testing": ("kelocate.model", "kelocate.organism.tokenizer", *FLOOR),
    "organism": ("kelocate.model", "kelocate.data", "kelocate.edit.request", "kelocate.edit.training", *FLOOR),
    "probes": ("kelocate.model", "kelocate.locate", "kelocate.edit", "kelocate.data", *FLOOR),
    "locate_then_edit": ("kelocate.locate", "kelocate.edit", "kelocate.model", *FLOOR),
    "loading": ("kelocate.model", "kelocate.organism", *FLOOR),
    "studies": ("kelocate.model", "kelocate.data", "kelocate.locate", "kelocate.edit", "kelocate.probes",
                "kelocate.plots", "kelocate.organism", "kelocate.locate_then_edit", "kelocate.loading", *FLOOR),
    "commands": ("kelocate",),  # the CLI is a skin over everything
    "cli": ("kelocate.commands", *FLOOR),
    "notebook": ("kelocate",),  # the inline views: figures of every room's results
    "__init__": ("kelocate",),  # the public face
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()
MODULE_NAMES = set(MODULES)


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, module: str) -> list[str]:
    """The kelocate modules `path` imports (relative imports resolved; `from pkg import mod` counts as pkg.mod)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from pkg import mod` imports pkg.mod; `from mod import Name`, mod
                names.append(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULE_NAMES else base)
    return [n for n in names if n == "kelocate" or n.startswith("kelocate.")]


def test_every_module_has_a_room():
    rooms = {_room(m) for m in MODULES}
    assert rooms <= set(ALLOWED), f"modules outside every room: {sorted(rooms - set(ALLOWED))}"


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_imports_only_go_down(room):
    own = f"kelocate.{room}" if room != "__init__" else "kelocate"
    bad = []
    for module, path in MODULES.items():
        if _room(module) != room:
            continue
        for name in _imports(path, module):
            if name not in MODULES and name.rpartition(".")[0] in MODULES:
                name = name.rpartition(".")[0]  # `from kelocate.x import Name`: the module is kelocate.x
            if room != "__init__" and name == "kelocate":
                bad.append(f"{path.relative_to(PACKAGE)} imports the package face `kelocate`")
                continue
            allowed = (own, *ALLOWED[room])
            if not any(name == ok or name.startswith(ok + ".") for ok in allowed):
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not bad, "\n".join(bad)


def _graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        graph.add_node(module)
        for name in _imports(path, module):
            while name not in MODULES and "." in name:
                name = name.rpartition(".")[0]
            # a package's __init__ re-exporting its own modules is its face, not a circle
            if name in MODULES and name != module and not module.startswith(name + "."):
                graph.add_edge(module, name)
    return graph


def test_no_import_circles():
    graph = _graph()
    circles = list(nx.simple_cycles(graph))
    assert not circles, "import circles:\n" + "\n".join(" -> ".join([*c, c[0]]) for c in circles[:10])


def _assigns_to_model(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) and leaf.value.id == "model":
                    lines.append(leaf.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Name) and first.id == "model":
                lines.append(node.lineno)
    return lines


def test_only_model_changes_a_model():
    bad = []
    for module, path in MODULES.items():
        if _room(module) == "model":
            continue
        for line in _assigns_to_model(ast.parse(path.read_text(encoding="utf-8"))):
            bad.append(f"{path.relative_to(PACKAGE)}:{line} assigns an attribute to a model")
    assert not bad, "\n".join(bad)
