"""The layers of the library, read from its import statements (see the README's architecture):
what may import what, and no import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The poptrain modules a file imports (every import, or the module-level ones only; imports
    under ``if TYPE_CHECKING:`` are for types and not counted)."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST, depth: int) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("poptrain"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.startswith("poptrain"):
                found.add(base)
        nested = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if nested and top_level_only:
            return
        for child in ast.iter_child_nodes(node):
            visit(child, depth + nested)

    visit(tree, 0)
    return found


FILES = {module_name(p): p for p in (SRC / "poptrain").rglob("*.py") if "migrations" not in p.parts}


def importers(prefix: str, *, top_level_only: bool = False) -> dict[str, set[str]]:
    return {
        m: imports(p, top_level_only=top_level_only)
        for m, p in FILES.items()
        if m == prefix or m.startswith(prefix + ".")
    }


def under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        (
            "poptrain.strategy",
            (
                "poptrain.storage",
                "poptrain.checkpoints",
                "poptrain.scheduler",
                "poptrain.runner",
                "poptrain.executors",
                "poptrain.run",
            ),
        ),
        ("poptrain.lineage", ("poptrain.storage", "poptrain.strategy", "poptrain.scheduler", "poptrain.executors")),
        ("poptrain.storage", ("poptrain.strategy", "poptrain.scheduler", "poptrain.executors", "poptrain.run")),
        ("poptrain.runner", ("poptrain.storage", "poptrain.scheduler", "poptrain.executors", "poptrain.run")),
        ("poptrain.scheduler", ("poptrain.executors", "poptrain.run")),
        ("poptrain.executors", ("poptrain.run", "poptrain.cli")),
        (
            "poptrain.checkpoints",
            ("poptrain.executors", "poptrain.scheduler", "poptrain.storage", "poptrain.vectorized"),
        ),
        ("poptrain.random_state", ("poptrain",)),
    ],
)
def test_a_layer_imports_nothing_above_it(layer: str, forbidden: tuple[str, ...]) -> None:
    bad = {
        m: sorted(i for i in found if under(i, *forbidden) and not under(i, layer))
        for m, found in importers(layer).items()
    }
    assert {m: b for m, b in bad.items() if b} == {}


def test_the_library_never_imports_its_experiments() -> None:
    bad = {
        m: sorted(i for i in found if under(i, "poptrain.experiments"))
        for m, found in importers("poptrain").items()
        if not under(m, "poptrain.experiments", "poptrain.cli")
    }
    assert {m: b for m, b in bad.items() if b} == {}


def test_no_import_circle_at_module_level() -> None:
    graph = {
        m: {i for i in found if i in FILES and i != m}
        for m, found in importers("poptrain", top_level_only=True).items()
    }
    packages = {m for m, p in FILES.items() if p.name == "__init__.py"}

    def edges(m: str) -> set[str]:  # a package's __init__ re-exporting its own modules is not a circle
        return {i for i in graph[m] if not (m in packages and i.startswith(m + "."))}

    circles = []
    state: dict[str, int] = {}

    def walk(m: str, path: list[str]) -> None:
        state[m] = 1
        for nxt in sorted(edges(m)):
            if state.get(nxt) == 1:
                circle = path[path.index(nxt) :] + [nxt]
                if not all(
                    under(x, circle[0].rsplit(".", 1)[0]) for x in circle
                ):  # within one package: its own business
                    circles.append(circle)
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[m] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert circles == []
