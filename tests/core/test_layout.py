"""The tree keeps the shape of the architecture (docs/architecture.md): modules small enough
to read in one sitting, short functions, no import cycles, no diagnostic named by the core."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import ROOT

SOURCES = sorted((ROOT / "runtime").rglob("*.py")) + sorted((ROOT / "diagnostics").glob("*.py"))
#: functions allowed past 60 lines, with why (none today)
LONG_FUNCTIONS: dict[str, str] = {}


def _module(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of ``modules`` that ``path`` imports anywhere (module level, in functions,
    under TYPE_CHECKING)."""
    me = _module(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            out.update(m for m in [base] + [f"{base}.{a.name}" for a in node.names] if m in modules)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
    out.discard(me)
    return out


def test_no_module_over_400_lines_and_no_function_over_60():
    long_modules = [(str(p.relative_to(ROOT)), n) for p in SOURCES if (n := len(p.read_text().splitlines())) > 400]
    assert long_modules == []
    long_functions = []
    for p in SOURCES:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                where = f"{_module(p)}.{node.name}"
                if n > 60 and where not in LONG_FUNCTIONS:
                    long_functions.append((where, n))
    assert long_functions == []


def test_no_import_cycles():
    modules = {_module(p): p for p in SOURCES}
    graph = {m: _imports(p, set(modules)) for m, p in modules.items()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[m] = 2
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_core_names_no_diagnostic_and_imports_nothing_from_diagnostics():
    """Removing a diagnostic never means editing the core: runtime/ names none of them, but
    as the default list of middleware (settings)."""
    allowed = {"runtime/settings.py"}
    for p in sorted((ROOT / "runtime").rglob("*.py")):
        rel = str(p.relative_to(ROOT))
        text = p.read_text()
        assert not re.search(r"^\s*(from|import) diagnostics", text, re.M), rel
        if rel not in allowed:
            assert "diagnostics." not in text.replace("diagnostics/", ""), rel
