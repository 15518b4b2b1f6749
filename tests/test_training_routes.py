"""One training loop for both routes, watched live: the same small image sweep trained in the Tune trial and
by a 2-worker gloo TorchTrainer yields the same kinds of rows, sample artifacts and per-evaluation progress
lines, and the TorchTrainer's stored weights serve a new solver setting without training again; and a trial still training already shows its loss curve (and learning rate, gradient norm,
throughput) in MLflow. Real Ray, real MLflow sqlite store, real files. The two routes' sweeps run in the test's
process on one local Ray (tests/sweep_here.py); the live test runs `fmx sweep`, whose trials read its environment."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from orchestrator.plan import train_run_name
from orchestrator.reconcile import train_run_record
from tests.cli_helpers import TRAINING_RUNS
from tests.sweep_here import module_ray, sweep_here

pytestmark = pytest.mark.slow

IMAGE_SWEEP = """\
name: routes
dataset: {name: digits}
model: {kind: unet, model_channels: 8, num_res_blocks: 1, channel_mult: [1, 2], attention_resolutions: [4], num_heads: 2}
train: {steps: 40, batch_size: 32, checkpoint_every: 20, log_every: 10, cpus_per_worker: 0.9 TRAINER}
eval: {samples: 32, likelihood_points: 8, divergence: hutchinson, dequant_draws: [1], reference_tol: null,
       at_steps: [20], likelihood: {solver: euler, nfe: 4}}
grid: {pairs: [[ot, fm]], seed: [0], solver: [euler, rk4], nfe: [4]}
"""
DDP_ROUTE = ", num_workers: 2, torch_trainer: true"  # a 2-worker gloo TorchTrainer
LIVE_POINTS = {"train_loss", "lr", "grad_norm", "steps_per_second", "examples_per_second"}


def _training_run(uri: str, sweep: str):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(sweep)
    if exp is None:
        return client, None
    runs = client.search_runs([exp.experiment_id], filter_string=TRAINING_RUNS)
    return client, (runs[0] if runs else None)


@pytest.fixture(scope="module")
def local_ray():
    with module_ray() as ray:
        yield ray


def _route(tmp_path: Path, name: str, trainer: str) -> dict:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "routes.yaml").write_text(IMAGE_SWEEP.replace(" TRAINER", trainer))
    outcome, log = sweep_here(folder / "routes.yaml")
    assert outcome.exit_code == 0 and outcome.failed_trials == 0, log[-4000:]
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client, run = _training_run(uri, "routes")
    artifacts = {a.path for folder_name in ("plots", "samples") for a in client.list_artifacts(run.info.run_id, folder_name)}
    children = client.search_runs([run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    runs = pd.read_parquet(folder / "results" / "routes" / "runs.parquet")
    progress = re.findall(r"step (\d+) eval (\d)/2 (\S+):", log)
    return {"runs": runs, "artifacts": artifacts, "children": children, "progress": progress, "run": run,
            "history": [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]}  # fmt: skip


def test_in_trial_and_torch_trainer_routes_give_the_same_kinds_of_outputs(tmp_path: Path, local_ray):
    in_trial = _route(tmp_path, "in_trial", "")
    ddp = _route(tmp_path, "ddp", DDP_ROUTE)
    for out in (in_trial, ddp):
        runs = out["runs"]
        assert len(runs) == 4 and (runs["status"] == "ok").all(), runs[["train_step", "solver", "error"]]
        assert sorted(zip(runs["train_step"], runs["solver"], strict=True)) == [(20, "euler"), (20, "rk4"), (40, "euler"), (40, "rk4")]
        assert runs["nll"].notna().all() and (runs["nll_unit"] == "bits/dim").all()
        assert out["artifacts"] >= {"plots/samples_step20.png", "plots/samples_step40.png", "plots/loss_curve.png",
                                    "samples/samples_step20.npz", "samples/samples_step40.npz"}  # fmt: skip
        assert len(out["children"]) == 4 and all(c.info.status == "FINISHED" for c in out["children"])
        # A progress line per evaluation, as each finishes, named by its setting.
        assert sorted(out["progress"]) == sorted([(s, i, lab) for s in ("20", "40") for i, lab in (("1", "euler_nfe4"), ("2", "rk4_nfe4"))])
        assert LIVE_POINTS <= set(out["run"].data.metrics), sorted(out["run"].data.metrics)
        assert out["history"] == [10, 20, 30, 40]
    # The global batch is the same; how it was split, and what trained it, is in every row.
    scale = ["global_batch", "worker_batch", "world_size", "grad_accum", "precision", "device"]
    assert in_trial["runs"][scale].drop_duplicates().values.tolist() == [[32, 32, 1, 1, "fp32", "cpu"]]
    assert ddp["runs"][scale].drop_duplicates().values.tolist() == [[32, 16, 2, 1, "fp32", "cpu"]]
    assert set(in_trial["runs"].columns) == set(ddp["runs"].columns)
    assert in_trial["artifacts"] == ddp["artifacts"]

    # The TorchTrainer route's checkpoints live in its Ray Train run, not in Tune's trial: the driver finds the
    # newest there when it must finish the record of a trial that was killed.
    folder, runs = tmp_path / "ddp", ddp["runs"]
    trial, cell = runs["trial_id"].iloc[0], runs["cell"].iloc[0]
    record = train_run_record(str(folder / "results" / "routes" / "ray"), train_run_name(trial, cell, "tune"))
    assert record["step"] == 40 and record["rows"] and {r["train_step"] for r in record["rows"]} <= {20, 40}
    train_dirs = list((folder / "results" / "routes" / "ray" / "train").glob(f"train-{trial}*"))
    assert train_dirs and any(train_dirs[0].rglob("state.pt"))
    # Rank 0 stored the weights of its evaluation steps: a new solver setting is evaluated from them, in a
    # trial of its own (one worker's resources), without training again.
    (folder / "routes.yaml").write_text(IMAGE_SWEEP.replace(" TRAINER", DDP_ROUTE).replace("nfe: [4]", "nfe: [4, 8]"))
    grown, log = sweep_here(folder / "routes.yaml")
    assert grown.exit_code == 0, log[-4000:]
    assert "0 to train, 1 to evaluate from stored weights (4 evaluations)" in log, log[-3000:]
    more = pd.read_parquet(folder / "results" / "routes" / "runs.parquet")
    assert len(more) == 8 and (more["status"] == "ok").all() and more["mlflow_run_id"].nunique() == 1
    assert sorted(more.loc[more["nfe_budget"] == 8, "train_step"]) == [20, 20, 40, 40]
    assert (more["world_size"] == 2).all()


LONG_SWEEP = """\
name: live
dataset: {name: checkerboard}
model: {kind: mlp, hidden: 128, depth: 3}
train: {steps: 3000, batch_size: 256, checkpoint_every: 3000, log_every: 100}
eval: {samples: 100, likelihood_points: 10, reference_tol: null, likelihood: {solver: euler, nfe: 4}}
grid: {pairs: [[ot, fm]], seed: [0], solver: [euler], nfe: [4]}
"""


def test_a_trial_still_training_already_shows_its_loss_curve_in_mlflow(tmp_path: Path):
    """Polled while the only checkpoint is the last step: every point seen then was logged live."""
    import subprocess

    from tests.cli_helpers import FMX, fmx_env

    (tmp_path / "live.yaml").write_text(LONG_SWEEP)
    env = {**fmx_env(), "FMX_LIVE_FLUSH_SECONDS": "0.5", "FMX_SYSTEM_METRICS_SECONDS": "1"}
    log = tmp_path / "sweep.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([FMX, "sweep", "live.yaml"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=stderr, text=True)  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seen: list[int] = []
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if "▶" not in log.read_text():  # the store is created (and migrated) by then: never race its creation
            time.sleep(0.2)
            continue
        client, run = _training_run(uri, "live")
        if run is not None and run.info.status == "RUNNING":
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
            if len(steps) >= 2 and max(steps) < 3000:
                seen = steps
                assert {"lr", "grad_norm", "steps_per_second"} <= set(client.get_run(run.info.run_id).data.metrics)
                break
        time.sleep(0.5)
    proc.communicate(timeout=300)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert len(seen) >= 2, "no loss points reached MLflow while the trial was training"
    client, run = _training_run(uri, "live")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == list(range(100, 3001, 100))
    record = json.loads(next((tmp_path / "results" / "live").rglob("record.json")).read_text())
    assert record["step"] == 3000
    # MLflow's own system metrics (psutil) were sampled in the trial's run while it trained.
    system = {name for name in client.get_run(run.info.run_id).data.metrics if name.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system, system
