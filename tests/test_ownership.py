"""One sweep folder per sweep name and store (orchestrator.ownership), through the CLI with a real local Ray
and a real MLflow store. The two commands that start no Ray (a refusal; a sweep whose cells are all in the
store) run in the test's process (`fmx_here`, tests/cli_helpers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.cli_helpers import fmx_in_this_process as fmx_here
from tests.cli_helpers import run_fmx

pytestmark = pytest.mark.slow

SWEEP = """\
name: owned
dataset: {name: moons}
model: {kind: mlp, hidden: 16, depth: 2}
train: {steps: 10, batch_size: 32}
eval: {samples: 50, likelihood_points: 10, reference_tol: null}
grid: {solver: [euler], nfe: [4]}
"""


def test_a_sweep_name_in_a_store_belongs_to_one_folder_until_that_folder_is_gone(tmp_path: Path):
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / "owned.yaml").write_text(SWEEP)
    assert run_fmx(["sweep", "owned.yaml", "--tracking-uri", store], cwd=first, timeout=300).returncode == 0

    refused = fmx_here(["sweep", "owned.yaml", "--tracking-uri", store], cwd=second)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert str(first) in refused.stderr and "belongs to" in refused.stderr, refused.stderr
    assert not (second / "results" / "owned" / "runs.parquet").exists()

    shutil.rmtree(first)  # the owner is gone: the next folder takes the sweep over, reusing its cells
    taken = fmx_here(["sweep", "owned.yaml", "--tracking-uri", store], cwd=second)
    assert taken.returncode == 0 and "0 to train, 1 reused" in taken.stderr, taken.stderr
    assert len(pd.read_parquet(second / "results" / "owned" / "runs.parquet")) == 1
