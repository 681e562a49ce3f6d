"""The package's shape: data flows one way between the packages, no import circles, no module
over 600 lines. Read from the source (every import statement, also those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "autoprumux"
MAX_LINES = 600

# The one-way flow (docs/architecture.md): a module may import its own package and the
# packages of a lower rank, never a higher one.
RANK = {
    "errors": 0,
    "_selection": 0,
    "_json": 0,
    "_lazy": 0,
    "_progress": 0,
    "config": 0,
    "_cache": 0,
    "_paths": 0,
    "_rules": 0,
    "_cpu": 0,
    "data": 1,
    "models": 2,
    "training": 3,
    "evaluation": 4,
    "deploy": 4,  # loads an export: data, models, the device check (no training, no MLflow)
    "pipeline": 5,
    "tracking": 6,
    "meta": 7,
    "search": 8,
    "student_server": 8,
    "export": 8,  # builds through the pipeline, reads studies (meta), registers (tracking)
    "cli": 9,
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = ["autoprumux", *p.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def imports(module: str, *, typing_too: bool) -> set[str]:
    """The autoprumux modules `module` imports (a package's submodule where one is named)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skip = set() if typing_too else _type_checking_lines(tree)
    out: set[str] = set()
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + [base])
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for n in names:
            while n and n not in MODULES:
                n = n.rsplit(".", 1)[0] if "." in n else ""
            if n and n != "autoprumux" and n != module:
                out.add(n)
    return out


def _top(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_the_graph_is_read_from_the_source():
    # the reader sees both kinds of import this package uses
    assert "autoprumux.meta._model" in imports("autoprumux.meta._recommend", typing_too=False)
    assert "autoprumux.pipeline" in imports("autoprumux.search._study", typing_too=False)
    assert set(RANK) == {_top(m) for m in MODULES if m != "autoprumux"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "autoprumux"))
def test_no_module_reaches_back(module):
    mine = RANK[_top(module)]
    back = sorted(n for n in imports(module, typing_too=True) if RANK[_top(n)] > mine)
    assert not back, f"{module} (rank {mine}) imports the later {back}"


def test_no_import_circles():
    graph = {m: imports(m, typing_too=False) for m in MODULES if m != "autoprumux"}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                circle = stack[stack.index(n) :] + [n]
                pytest.fail("import circle: " + " -> ".join(circle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_module_is_over_the_limit():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
