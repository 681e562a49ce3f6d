"""The package's shape: data flows one way between the packages, no import circles, no module
over 600 lines. Read from the source (every import statement, also those inside functions)."""

from __future__ import annotations

import ast
import re
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
    "serving": 8,  # the recommender as an MLflow model and `autoprumux serve`
    "search": 9,  # registers the recommender (serving) at the end of a study
    "student_server": 9,
    "export": 9,  # builds through the pipeline, reads studies (meta), pyfunc helpers (serving)
    "cli": 10,
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
    # an import for type checking only is an edge of the graph the circle test walks
    assert "autoprumux.pipeline" not in imports("autoprumux.export._build", typing_too=False)
    assert "autoprumux.pipeline" in imports("autoprumux.export._build", typing_too=True)
    assert set(RANK) == {_top(m) for m in MODULES if m != "autoprumux"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "autoprumux"))
def test_no_module_reaches_back(module):
    mine = RANK[_top(module)]
    back = sorted(n for n in imports(module, typing_too=True) if RANK[_top(n)] > mine)
    assert not back, f"{module} (rank {mine}) imports the later {back}"


def test_no_import_circles():
    # imports for type checking only count too: a circle behind TYPE_CHECKING is still a circle
    graph = {m: imports(m, typing_too=True) for m in MODULES if m != "autoprumux"}
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


# ---- the documents name what exists ------------------------------------------------------------
REPO = ROOT.parent
_DOC_FILES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md", REPO / "BENCHMARKS.md"]
_FILE_REF = re.compile(r"[`(\s\[]([A-Za-z0-9_./-]+\.(?:py|sh|yaml|ipynb|json))\b")
# where a path in a document may be relative to (a bare module name sits under a package the
# sentence names: it must exist in one of these trees)
_DOC_BASES = ("", "autoprumux", "benchmarks", "tests")
_DOC_TREES = ("autoprumux", "benchmarks", "search_spaces", "tests", "notebooks")


def referenced_files(text: str) -> set[str]:
    """The file paths a document names (module paths, scripts, spaces, and the JSON results
    under benchmarks/results; other JSON names are files a run writes)."""
    refs = {m.group(1).removeprefix("./") for m in _FILE_REF.finditer(text)}
    return {r for r in refs if not r.endswith(".json") or r.startswith("benchmarks/results/")}


def missing_files(text: str) -> list[str]:
    names = {p.name for t in _DOC_TREES for p in (REPO / t).rglob("*") if p.is_file()}
    out = []
    for ref in sorted(referenced_files(text)):
        if "/" not in ref:
            found = ref in names
        else:
            found = any((REPO / base / ref).exists() for base in _DOC_BASES)
        if not found and "<" not in ref and "*" not in ref:
            out.append(ref)
    return out


@pytest.mark.parametrize("doc", _DOC_FILES, ids=lambda p: p.name)
def test_every_file_a_document_names_exists(doc):
    assert missing_files(doc.read_text()) == [], f"{doc.name} names files that do not exist"


def test_a_renamed_module_is_caught():
    assert missing_files("see `pipeline/_baseline.py` and `training/_stopping.py`") == []
    named = "see `pipeline.py`, `training/_gone.py` and (benchmarks/results/gone.json)"
    assert missing_files(named) == [
        "benchmarks/results/gone.json",
        "pipeline.py",
        "training/_gone.py",
    ]
