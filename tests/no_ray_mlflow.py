"""A Python in which `ray` and `mlflow` cannot be imported, as on a bare GPU machine: BLOCKED is code to run
first in a fresh interpreter (`python -c BLOCKED + code`), and `blocking_site` makes a folder whose
sitecustomize.py runs it, so that every Python started with that folder on PYTHONPATH (subprocesses too) is so."""

from __future__ import annotations

from pathlib import Path

BLOCKED = """
import importlib.abc, sys

class NoRayNoMlflow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "mlflow"):
            raise ImportError(f"{name} is not installed here (blocked by tests/no_ray_mlflow.py)")
        return None

sys.meta_path.insert(0, NoRayNoMlflow())
"""


def blocking_site(folder: Path) -> Path:
    """`folder` with a sitecustomize.py that blocks Ray and MLflow: put it first on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKED)
    return folder
