"""The shape of fmx's code in numbers: the largest module and class (lines), and how many imports of an fmx
module sit inside a function (each one an import circle held apart, or a start-up cost deferred).

    python scripts/house_metrics.py                 # this checkout
    python scripts/house_metrics.py --rev eb5e95b   # a commit of this repository (read with git show)

Used for the before/after figures of the house's rebuild (issue 23's note), beside scripts/sweep_path.py.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from pathlib import Path

PACKAGES = ("orchestrator", "fm_core")
REPO = Path(__file__).resolve().parent.parent


def _sources(rev: str | None) -> dict[str, str]:
    """Every Python file of the two packages, by path, from the working tree or from `rev`."""
    if rev is None:
        return {str(p.relative_to(REPO)): p.read_text() for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, *PACKAGES], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()  # fmt: skip
    return {n: subprocess.run(["git", "show", f"{rev}:{n}"], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout for n in names if n.endswith(".py")}  # fmt: skip


def _is_fmx(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] in PACKAGES
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] in PACKAGES for a in node.names)
    return False


def measure(sources: dict[str, str]) -> dict[str, object]:
    modules = {name: len(text.splitlines()) for name, text in sources.items()}
    classes: dict[str, int] = {}
    local_imports = 0
    for name, text in sources.items():
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                classes[f"{name}:{node.name}"] = (node.end_lineno or node.lineno) - node.lineno + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local_imports += sum(_is_fmx(inner) for inner in ast.walk(node))
    module, module_lines = max(modules.items(), key=lambda kv: kv[1])
    cls, class_lines = max(classes.items(), key=lambda kv: kv[1])
    return {"modules": len(modules), "largest module": f"{module} ({module_lines} lines)",
            "largest class": f"{cls} ({class_lines} lines)", "function-local fmx imports": local_imports}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="a git commit to measure instead of the working tree")
    for key, value in measure(_sources(parser.parse_args().rev)).items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
