"""A cell reused by an edited file shows under the names that file gives it (issue: moving train.lr into
grid.train reused the cell, right, but its rows kept the trial id without train_axes, so `fmx compare` could
not find `FM-OT [lr=0.002]`). Real local Ray, real MLflow store, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.cli_helpers import fmx_in_this_process as fmx_here
from tests.cli_helpers import run_fmx

pytestmark = pytest.mark.slow

FIXED = """\
name: renamed
dataset: {name: moons}
model: {kind: mlp, hidden: 16, depth: 2}
train: {steps: 10, batch_size: 32, lr: 0.002}
eval: {samples: 50, likelihood_points: 10, reference_tol: null}
grid: {solver: [euler], nfe: [4], seed: [0, 1]}
max_concurrent_trials: 1  # see tests/conftest.py: ONE_TRIAL_AT_A_TIME
"""
AS_AN_AXIS = FIXED.replace(", lr: 0.002}", "}").replace("seed: [0, 1]}", "seed: [0, 1], train: {lr: [0.002]}}")


def test_a_reused_cell_takes_the_names_of_the_file_that_reuses_it(tmp_path: Path):
    (tmp_path / "renamed.yaml").write_text(FIXED)
    assert run_fmx(["sweep", "renamed.yaml"], cwd=tmp_path, timeout=300).returncode == 0
    before = pd.read_parquet(tmp_path / "results" / "renamed" / "runs.parquet")
    assert set(before["trial_id"]) == {"ot-fm-independent-s0", "ot-fm-independent-s1"} and before["train_axes"].isna().all()

    (tmp_path / "renamed.yaml").write_text(AS_AN_AXIS)
    again = run_fmx(["sweep", "renamed.yaml"], cwd=tmp_path, timeout=300)
    assert again.returncode == 0 and "0 to train, 2 reused" in again.stderr, again.stderr
    after = pd.read_parquet(tmp_path / "results" / "renamed" / "runs.parquet")
    assert set(after["trial_id"]) == {"ot-fm-independent-s0-lr_0.002", "ot-fm-independent-s1-lr_0.002"}, after["trial_id"]
    assert (after["train_axes"] == "lr=0.002").all()
    assert list(after["mlflow_run_id"].sort_values()) == list(before["mlflow_run_id"].sort_values())  # the same runs
    # `fmx compare` finds the method by that name: the one it cannot find is the other, which is not there.
    compared = fmx_here(["compare", "renamed", "FM-OT [lr=0.002]", "FM-VP", "--metric", "nfe"], cwd=tmp_path)
    assert "no method 'FM-VP' in this sweep; it has FM-OT [lr=0.002]" in compared.stderr, compared.stderr
