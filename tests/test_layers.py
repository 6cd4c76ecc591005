"""The layer rules (docs/ARCHITECTURE.md): each package imports only the packages below it.

Every import counts, at module level or inside a function, so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"models", "store", "indexer", "search", "training", "service", "cli", "benchmarks", "loadtests", "tests"}
# package -> the project packages it may import besides itself
ALLOWED = {
    "models": set(),
    "store": set(),
    "indexer": {"models", "store"},
    "search": {"models", "store", "indexer"},
    "training": {"models", "store", "indexer", "search"},
    "service": {"models", "store", "indexer", "search"},
    "cli": {"models", "store", "indexer", "search", "training", "service"},
}


def imported_packages(path: Path) -> dict[str, int]:
    """Top-level project packages a file imports -> the first line importing each."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PROJECT:
                found.setdefault(top, node.lineno)
    return found


def files_of(package: str) -> list[Path]:
    return [ROOT / "cli.py"] if package == "cli" else sorted((ROOT / package).rglob("*.py"))


def violations(package: str) -> list[str]:
    allowed = ALLOWED[package] | {package}
    return [f"{path.relative_to(ROOT)}:{line} imports {top}"
            for path in files_of(package) for top, line in imported_packages(path).items() if top not in allowed]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_the_layers_below_it(package):
    assert files_of(package), f"{package} has no Python files: is ALLOWED out of date?"
    assert violations(package) == []


def test_the_rules_have_no_cycle():
    """A package may not reach itself through the allowed edges."""
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(p == goal or (p not in seen and reaches(p, goal, seen | {p})) for p in ALLOWED.get(start, ()))

    assert [p for p in ALLOWED if reaches(p, p, set())] == []


def test_every_runtime_package_is_ruled():
    """A new top-level package must be placed in a layer before it can import anything."""
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} - {"benchmarks", "loadtests", "tests"}
    assert packages <= set(ALLOWED), sorted(packages - set(ALLOWED))


def test_a_broken_rule_is_caught(tmp_path):
    """The checker itself: a lazy import of the store inside the model layer is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from store.edge import EdgeStore\n    return EdgeStore\n")
    assert imported_packages(bad) == {"store": 2}
