"""The sweep driver must not import PyTorch or MLflow on its way to Ray's start (docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys


def test_the_driver_and_the_trial_entry_import_neither_torch_nor_mlflow():
    code = (
        "import sys\n"
        "import orchestrator.cli, orchestrator.sweep, orchestrator.trial_entry\n"
        "print(sorted(m for m in ('torch', 'mlflow', 'matplotlib') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
