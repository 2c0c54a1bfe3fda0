"""The house has floors (docs/design.md, "Floors"): each package imports only from the floors below
it, so it reads top down and no import runs back up. Every import in the packages' source is
checked, function-level ones and ``importlib.import_module("...")`` of a literal name included."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package -> floor; a package may import packages on lower floors only (and itself).
FLOORS = {"tools": 4, "benchmarks": 4, "model": 3, "autotune": 3, "hola_dsl": 2, "schedules": 1}


def _imported(tree: ast.AST):
    """(line, top-level package) of every import in a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.lineno, node.args[0].value.split(".")[0]


def _upward(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, imported in _imported(ast.parse(path.read_text(), str(path))):
            if imported in FLOORS and imported != package and FLOORS[imported] >= FLOORS[package]:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {imported} (floor {FLOORS[imported]}, "
                             f"{package} is on floor {FLOORS[package]})")
    return found


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_no_import_runs_up_or_sideways(package):
    assert not _upward(package)


def test_the_check_sees_a_function_level_import(tmp_path):
    tree = ast.parse("def f():\n    from model import lm\n    import importlib; importlib.import_module('autotune.db')\n")
    assert [name for _, name in _imported(tree)] == ["model", "importlib", "autotune"]
