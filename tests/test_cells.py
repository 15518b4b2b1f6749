"""A sweep grows without retraining: `fmx sweep` of an edited file runs only its missing cells (real Ray, real
MLflow sqlite store, real checkpoints). The edits run in the test's process on one local Ray
(tests/sweep_here.py); the sweep that must not start Ray at all, and the table a sweep prints, run `fmx`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.cli_helpers import TRAINING_RUNS, cleanup_ray_tmp, fmx_env, run_fmx
from tests.sweep_here import module_ray, sweep_here
from tests.test_sweep_integration import _fmx

pytestmark = pytest.mark.slow

GROWING = """\
name: growing
dataset:
  name: moons
model: {kind: mlp, hidden: 32, depth: 2}
train: {steps: 60, batch_size: 128, checkpoint_every: 30, log_every: 10}
eval: {samples: 200, likelihood_points: 20, reference_tol: null}
grid:
  pairs: [[ot, fm], [vp, fm]]
  seed: [0]
  solver: [euler]
  nfe: [4]
max_concurrent_trials: 1  # see tests/conftest.py: ONE_TRIAL_AT_A_TIME
"""


@pytest.fixture(scope="module")
def local_ray():
    with module_ray() as ray:
        yield ray


def _sweep(tmp_path: Path, text: str) -> str:
    """The progress lines of `fmx sweep growing.yaml` (as the text, in the test's process)."""
    (tmp_path / "growing.yaml").write_text(text)
    outcome, log = sweep_here(tmp_path / "growing.yaml")
    assert outcome.exit_code == 0, log
    return log


def _runs(tmp_path: Path) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / "results" / "growing" / "runs.parquet")


def _mlflow(tmp_path: Path, filter_string: str = "") -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("growing")
    return client.search_runs([experiment.experiment_id], filter_string=filter_string, max_results=1000)


def _tune_trials(tmp_path: Path, name: str) -> int:
    return sum(1 for p in (tmp_path / "results" / "growing" / "ray" / name).iterdir() if p.is_dir() and (p / "params.json").exists())


def _loss_steps(tmp_path: Path, run_id: str) -> list[int]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    return sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))


def test_an_edited_sweep_runs_only_its_missing_cells(tmp_path: Path, local_ray):
    _sweep(tmp_path, GROWING)
    first = _runs(tmp_path)
    assert len(first) == 2 and (first["status"] == "ok").all()

    # One more seed: only the two new trainings run, in a Tune experiment of their own.
    grown = _sweep(tmp_path, GROWING.replace("seed: [0]", "seed: [0, 1]"))
    assert "2 to train" in grown and "2 reused" in grown
    assert _tune_trials(tmp_path, "tune") == 2 and _tune_trials(tmp_path, "tune-2") == 2
    runs = _runs(tmp_path)
    assert len(runs) == 4 and sorted(runs["seed"]) == [0, 0, 1, 1]
    old = runs[runs["seed"] == 0].set_index("trial_id").sort_index()
    pd.testing.assert_frame_equal(  # the reused rows are the very rows of the first run
        old[["mlflow_run_id", "nll", "train_seconds"]], first.set_index("trial_id").sort_index()[["mlflow_run_id", "nll", "train_seconds"]]
    )
    parents = {r.info.run_id: r for r in _mlflow(tmp_path, TRAINING_RUNS)}
    assert len(parents) == 4

    # One more solver setting: no training at all; one evaluation per training, from its stored weights.
    more = _sweep(tmp_path, GROWING.replace("seed: [0]", "seed: [0, 1]").replace("nfe: [4]", "nfe: [4, 2]"))
    assert "0 to train, 4 to evaluate from stored weights (4 evaluations)" in more, more
    work = json.loads((tmp_path / "results" / "growing" / "ray" / "passes.json").read_text())[-1]["work"]
    assert [w["mode"] for w in work] == ["evaluate"] * 4
    runs = _runs(tmp_path)
    assert len(runs) == 8 and runs.groupby(["trial_id", "nfe_budget"]).size().eq(1).all()
    assert (runs["status"] == "ok").all() and set(runs["nfe"]) == {2, 4}
    after = {r.info.run_id: r for r in _mlflow(tmp_path, TRAINING_RUNS)}
    assert after.keys() == parents.keys()  # no training run added, none doubled
    for run_id in after:  # nor trained again: the loss curve is the one of the first training
        assert _loss_steps(tmp_path, run_id) == [10, 20, 30, 40, 50, 60]
    children = _mlflow(tmp_path, "tags.`fmx.evaluation` != ''")
    assert len(children) == 8 and len({(c.data.tags["mlflow.parentRunId"], c.data.tags["fmx.evaluation"]) for c in children}) == 8
    assert set(runs["mlflow_run_id"]) == set(parents)

    # Another step count: new cells, trained into new runs; the old ones stay in MLflow, out of the tables,
    # and nothing of them leaks into the new runs (also with results/ deleted, the tune state with it).
    shutil.rmtree(tmp_path / "results")
    changed = GROWING.replace("seed: [0]", "seed: [0, 1]").replace("nfe: [4]", "nfe: [4, 2]").replace("steps: 60", "steps: 40")
    retrained = _sweep(tmp_path, changed)
    assert "4 to train, 0 reused" in retrained, retrained
    runs = _runs(tmp_path)
    assert len(runs) == 8 and (runs["train_steps"] == 40).all() and (runs["train_step"] == 40).all()
    new_ids = set(runs["mlflow_run_id"])
    assert not new_ids & set(parents)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run_id in new_ids:
        run = client.get_run(run_id)
        assert run.data.params["train.steps"] == "40" and run.data.tags["fmx.current"] == "true"
        assert _loss_steps(tmp_path, run_id) == [10, 20, 30, 40]
        kids = _mlflow(tmp_path, f"tags.`mlflow.parentRunId` = '{run_id}'")
        assert len(kids) == 2 and {k.data.params["train_step"] for k in kids} == {"40"}
    for run_id in parents:  # the 60-step cells: kept, marked, out of the table
        assert client.get_run(run_id).data.tags["fmx.current"] == "false"
    assert len(_mlflow(tmp_path, TRAINING_RUNS)) == 8

    # Back to 60 steps: every cell is in MLflow with all its evaluations, so nothing runs (no stored weights
    # are needed, and Ray is not even started) and the table is the 60-step one again.
    (tmp_path / "growing.yaml").write_text(changed.replace("steps: 40", "steps: 60"))
    env = fmx_env()
    try:
        back = run_fmx(["sweep", "growing.yaml"], tmp_path, env)
        ray_files = list(Path(env["RAY_TMPDIR"]).iterdir())
    finally:
        cleanup_ray_tmp(env)
    assert back.returncode == 0 and "0 to train, 4 reused" in back.stderr, back.stderr
    assert ray_files == [], ray_files
    runs = _runs(tmp_path)
    assert len(runs) == 8 and set(runs["mlflow_run_id"]) == set(parents) and (runs["train_step"] == 60).all()


AXES = """\
name: axes
dataset: {name: moons}
model: {kind: mlp, hidden: 32, depth: 2}
train: {steps: 40, batch_size: 128, checkpoint_every: 40, log_every: 20}
eval: {samples: 200, likelihood_points: 20, reference_tol: null}
grid:
  pairs: [[ot, fm]]
  solver: [euler]
  nfe: [4]
  train: {ema_decay: [null, 0.9], sigma_min: [0.0, 0.01]}
max_concurrent_trials: 1  # see tests/conftest.py: ONE_TRIAL_AT_A_TIME
"""


def test_training_options_as_grid_axes_train_once_per_value_and_line_up_in_the_table(tmp_path: Path):
    (tmp_path / "axes.yaml").write_text(AXES)
    result = _fmx(["sweep", "axes.yaml"], tmp_path)
    runs = pd.read_parquet(tmp_path / "results" / "axes" / "runs.parquet")
    assert len(runs) == 4 and runs["mlflow_run_id"].nunique() == 4 and (runs["status"] == "ok").all()
    assert sorted(runs["train_axes"]) == [
        "ema_decay=0.9 sigma_min=0.0", "ema_decay=0.9 sigma_min=0.01", "ema_decay=none sigma_min=0.0", "ema_decay=none sigma_min=0.01",
    ]  # fmt: skip
    assert (runs["weights"] == runs["train_axes"].str.startswith("ema_decay=0.9").map({True: "ema", False: "model"})).all()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for row in runs.itertuples():
        params = client.get_run(row.mlflow_run_id).data.params
        ema, sigma = (part.split("=")[1] for part in row.train_axes.split())
        assert params["train.ema_decay"] == ("None" if ema == "none" else ema) and params["train.sigma_min"] == sigma
        assert params["train_axes"] == row.train_axes and row.trial_id.startswith("ot-fm-independent-s0-ema_decay_")
    table = pd.read_parquet(tmp_path / "results" / "axes" / "table.parquet")
    assert len(table) == 4 and table["train_axes"].nunique() == 4 and (table["seeds"] == 1).all()
    # The printed table names each variant in its method label (folded onto two lines in 80 columns).
    assert result.stdout.count("[ema_decay=0.9") == 2 and result.stdout.count("sigma_min=0.01]") == 2, result.stdout
