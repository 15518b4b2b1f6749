"""The shape of the house, read from the source (the `ast` of every module): imports flow one way.

fmx's own modules import each other at the top of the module only, so the import graph is the real
dependency graph, and it has no circle. fm_core (the science) never imports the orchestrator, Ray or MLflow.
The only deferred loads of fmx code are the two named in `DEFERRED_LOADS`, each for start-up time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("fm_core", "orchestrator")
#: The modules that load fmx code on first use (importlib), and why: nowhere else may fmx defer an import.
DEFERRING_MODULES = {
    # The Python API and the CLI's door to the stages: Ray Tune, PyTorch, pandas and matplotlib cost seconds
    # that `fmx validate`, `--help` and a bad file's refusal must not pay (its `_stage` names what it loads).
    "orchestrator.api",
    # What Tune is given: a trial imports PyTorch; the driver that hands Tune the trial function never does.
    "orchestrator.tune_entry",
    # PyTorch itself (not fmx code) at first attribute access: validation reads fm_core's schedules and
    # objectives without it.
    "fm_core.lazy",
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The fmx module an import names (`from orchestrator import ui` names orchestrator.ui)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(module-level imports of fmx modules, imports of fmx modules inside a function), with line numbers."""
    top: list[tuple[str, int]] = []
    local: list[tuple[str, int]] = []

    def names(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        return [f"{base}.{alias.name}" for alias in node.names] if base in PACKAGES else [base]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in names(child):
                    target = _target(name) if name.split(".")[0] in PACKAGES else None
                    if target is not None:
                        (local if inside else top).append((target, child.lineno))
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return top, local


def _deferred_loads(path: Path) -> list[str]:
    """What `importlib.import_module(...)` calls name (`?` where the name is not a constant)."""
    loads = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module":
            first = node.args[0] if node.args else None
            loads.append(first.value if isinstance(first, ast.Constant) else "?")
    return loads


def test_no_fmx_module_imports_another_inside_a_function():
    found = [f"{name}:{line} imports {target}" for name, path in MODULES.items() for target, line in _imports(path)[1]]
    assert found == []


def test_fmx_defers_loading_its_own_code_only_where_said_why():
    deferring = {name for name, path in MODULES.items() if _deferred_loads(path)}
    assert deferring <= DEFERRING_MODULES, deferring - DEFERRING_MODULES
    from orchestrator import api

    stages = [node.args[0].value for node in ast.walk(ast.parse(MODULES["orchestrator.api"].read_text()))
              if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_stage"]  # fmt: skip
    assert stages and set(stages) <= set(api.STAGES) and all(s in MODULES for s in api.STAGES)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), plus modules importing themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    return out


def _graph() -> dict[str, set[str]]:
    """Who imports whom at module level (TYPE_CHECKING imports count: a circle for the type checker is one
    for the reader too). A package's own __init__ importing its submodules is not an edge back."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        graph[name] = {t for t, _ in _imports(path)[0] if t != name and not name.startswith(t + ".")}
    return graph


def test_the_import_graph_has_no_circle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    """The check above could not fail if `_cycles` found nothing ever: a constructed circle is found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("forbidden", ["orchestrator", "ray", "mlflow"])
def test_fm_core_never_imports_the_orchestrator_ray_or_mlflow(forbidden: str):
    offenders = []
    for name, path in MODULES.items():
        if not name.startswith("fm_core"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                offenders += [f"{name}:{node.lineno}" for a in node.names if a.name.split(".")[0] == forbidden]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == forbidden:
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


#: Issue 23's bounds ("no class over about 200 lines, no module over about 400"), with the slack "about" allows:
#: a module past them is doing a second job, which wants a module of its own.
MODULE_LINES, CLASS_LINES = 420, 200


def _oversized(sources: dict[str, str]) -> list[str]:
    """Modules longer than MODULE_LINES and classes longer than CLASS_LINES, as 'name: N lines'."""
    found = []
    for name, text in sources.items():
        if len(text.splitlines()) > MODULE_LINES:
            found.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > CLASS_LINES:
                found.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    return found


def test_no_module_or_class_has_grown_past_one_job():
    assert _oversized({name: path.read_text() for name, path in MODULES.items()}) == []


def test_the_size_check_finds_a_long_module_and_a_long_class():
    long_class = "class Big:\n" + "    x = 1\n" * CLASS_LINES
    long_module = "y = 1\n" * (MODULE_LINES + 1)
    assert _oversized({"c": long_class, "m": long_module}) == ["c.Big: 201 lines", "m: 421 lines"]
