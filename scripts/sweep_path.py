"""Which of fmx's modules a sweep file passes through in the driver, on its way from `fmx sweep` to the tables.

Runs `fmx sweep FILE` in this process (a local Ray, ./mlflow.db in a temporary folder) with a profile hook on
the driver's main thread. Each call into an fmx module from another fmx module (the nearest fmx frame up the
stack, so a library's callbacks count as called by the fmx code that handed them over) is one step of the
path. It prints how many modules the path enters, how many distinct steps (caller module -> callee module) it
takes, how many of those go against the import direction (the callee imports its caller: the path climbing
back up), and from how many modules each module is entered. Trials run in Ray's workers and are not counted.

    python scripts/sweep_path.py sweeps/smoke.yaml                  # this checkout
    PYTHONPATH=/path/to/other/checkout python scripts/sweep_path.py sweeps/smoke.yaml

Used for the before/after figures of the driver's rebuild (issue 23's note).
"""

from __future__ import annotations

import ast
import collections
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

PACKAGES = ("orchestrator", "fm_core")


def _imports(module: str) -> set[str]:
    """The fmx modules `module` imports anywhere in its source (module level or not)."""
    spec_file = getattr(sys.modules.get(module), "__file__", None)
    if spec_file is None:
        return set()
    found: set[str] = set()
    for node in ast.walk(ast.parse(Path(spec_file).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
    return found


def _fmx_module(frame: FrameType | None) -> str | None:
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] in PACKAGES:
            return module
        frame = frame.f_back
    return None


def main(sweep_file: str) -> None:
    steps: set[tuple[str, str]] = set()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        callee = frame.f_globals.get("__name__", "")
        if callee.split(".")[0] not in PACKAGES:
            return
        caller = _fmx_module(frame.f_back)
        if caller is not None and caller != callee:
            steps.add((caller, callee))

    source = Path(sweep_file).resolve()
    work = Path(tempfile.mkdtemp(prefix="fmx-path-"))
    shutil.copy(source, work / source.name)
    os.chdir(work)
    from orchestrator.cli import app

    sys.setprofile(hook)
    try:
        app(["sweep", source.name], standalone_mode=False)
    finally:
        sys.setprofile(None)
        shutil.rmtree(work, ignore_errors=True)
    modules = {m for step in steps for m in step}
    climbs = sorted((a, b) for a, b in steps if a in _imports(b))
    entered_from = collections.Counter(callee for _, callee in steps)
    print(f"modules: {len(modules)}  steps: {len(steps)}  climbs back up: {len(climbs)}", flush=True)
    print("entered from (modules): " + ", ".join(f"{m.split('.')[-1]} {n}" for m, n in entered_from.most_common(12)))
    print("climbs: " + ", ".join(f"{a.split('.')[-1]}->{b.split('.')[-1]}" for a, b in climbs))


if __name__ == "__main__":
    main(sys.argv[1])
