"""`fmx sweep` end to end through the CLI: real Ray, real MLflow (local store and server), real Parquet. The
sweeps whose subject is how a failed trial is recorded run in the test's process on one local Ray
(tests/sweep_here.py); commands that only read the store run in it too (`fmx_here`)."""

from __future__ import annotations

import json
import re
from collections import Counter
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from orchestrator.tables import display_table, summarize
from tests.layout_helpers import assert_numbers_whole
from tests.cli_helpers import FMX, REPO, TRAINING_RUNS, cleanup_ray_tmp, fmx_env, kill_session, leftover_ray_processes, run_fmx
from tests.cli_helpers import fmx_in_this_process as fmx_here
from tests.mlflow_server import mlflow_server
from tests.sweep_here import module_ray, sweep_here

pytestmark = pytest.mark.slow

REQUIRED_COLUMNS = (
    "sweep trial_id mlflow_run_id dataset path objective coupling seed solver tol nfe_budget nfe nll nll_unit "
    "sample_metric sample_metric_name ode_error train_steps train_seconds eval_seconds status error"
).split()
SMOKE_TRIALS = {"ot-fm-independent-s0", "vp-fm-independent-s0", "vp-sm-independent-s0"}


def _fmx(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = fmx_env()
    try:
        result = run_fmx(args, cwd, env, timeout)
        left = leftover_ray_processes(env)
    finally:
        cleanup_ray_tmp(env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert not left, f"the local Ray of `fmx {args[0]}` outlived the command: {left}"
    return result


def _runs_of(uri: str, sweep: str, filter_string: str = "") -> list:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(sweep)
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], filter_string=filter_string, max_results=1000)


CHILD_PARAMS = {"method", "path", "objective", "coupling", "train_axes", "seed", "solver", "tol", "nfe_budget", "cfg_scale", "setting", "train_step",
                "dequant_draws", "weights"}  # fmt: skip
CHILD_METRICS = {"nfe", "nll_nats", "sliced_w2", "straightness", "path_energy", "ode_error", "eval_seconds", "nll_nfe"}


def _check_smoke_outputs(workdir: Path, uri: str) -> pd.DataFrame:
    runs = pd.read_parquet(workdir / "results" / "smoke" / "runs.parquet")
    table = pd.read_parquet(workdir / "results" / "smoke" / "table.parquet")
    assert set(REQUIRED_COLUMNS) <= set(runs.columns)
    # One training per configuration (3), each evaluated under both settings, all fine.
    assert set(runs["trial_id"]) == SMOKE_TRIALS and len(runs) == 6
    assert (runs["status"] == "ok").all(), runs[["trial_id", "error"]]
    assert (runs["train_steps"] == 300).all()
    assert runs.groupby("trial_id")["mlflow_run_id"].nunique().eq(1).all()
    assert set(runs["solver"]) == {"euler", "dopri5"}
    assert (runs.loc[runs["solver"] == "euler", "nfe"] == 8).all()
    assert (runs.loc[runs["solver"] == "dopri5", "nfe"] > 8).all()
    assert runs["nll"].notna().all() and (runs["nll_unit"] == "nats").all()
    assert (runs["sample_metric_name"] == "sliced_w2").all() and (runs["sample_metric"] > 0).all()
    # Every sample solve measures its paths (no per-sample solves unless the file asks).
    assert (runs["straightness"] > 0).all() and (runs["path_energy"] > runs["straightness"]).all()
    assert runs["nfe_sample_mean"].isna().all()
    # The likelihood protocol at its default: one NLL per trained checkpoint, integrated with dopri5 at 1e-5.
    protocol = ["nll", "nll_protocol", "nll_solver", "nll_nfe", "nll_divergence", "nll_points"]
    assert (runs.groupby(["trial_id", "train_step"])[protocol].nunique(dropna=False) == 1).all().all()
    assert (runs["nll_protocol"] == "shared").all() and (runs["nll_solver"] == "dopri5_tol1e-05").all()
    assert len(table) == 6 and (table["seeds"] == 1).all()
    # MLflow: one parent run per training (training params and curves only), one child per evaluation.
    mlflow_runs = _runs_of(uri, "smoke")
    parents = [r for r in mlflow_runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in mlflow_runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["fmx.trial_id"] for r in parents) == sorted(SMOKE_TRIALS)
    parent_of = {r.info.run_id: r.data.tags["fmx.trial_id"] for r in parents}
    for run in parents:
        assert run.info.status == "FINISHED"
        assert {"path", "objective", "coupling", "seed", "train.steps", "model.hidden"} <= set(run.data.params)
        assert not {k for k in run.data.params if k.startswith("model.")} & {"model.model_channels", "model.num_heads"}
        assert "solver" not in run.data.params and {"train_loss", "train_loss_final"} <= set(run.data.metrics)
    assert {r.info.run_id for r in parents} == set(runs["mlflow_run_id"])
    assert len(children) == len(runs)
    for run in children:
        assert run.info.status == "FINISHED"
        assert set(run.data.params) == CHILD_PARAMS and set(run.data.metrics) == CHILD_METRICS
        trial = parent_of[run.data.tags["mlflow.parentRunId"]]
        row = runs[(runs["trial_id"] == trial) & (runs["solver"] == run.data.params["solver"])].iloc[0]
        assert run.data.metrics["nfe"] == row["nfe"] and run.data.metrics["nll_nats"] == pytest.approx(row["nll"], rel=1e-3)
        assert run.data.metrics["straightness"] == pytest.approx(row["straightness"], rel=1e-3)
    # A filter on child params finds exactly those evaluations.
    found = _runs_of(uri, "smoke", "params.solver = 'dopri5' and params.path = 'ot'")
    assert [r.data.params["objective"] for r in found] == ["fm"] and found[0].data.params["tol"] == "1e-05"
    _check_comparison_view(uri, children)
    return runs


def _check_comparison_view(uri: str, children: list, sweep: str = "smoke") -> None:
    """The experiment's saved UI view, read back from the store: it names only columns the children have, every
    child param and metric among them, the method's label, setting and values first; its filter finds exactly
    the children; it groups them by method x setting (MLflow's average over seeds) and charts the values by group."""
    from orchestrator.views import VIEW_TAG

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(sweep)
    view = json.loads(exp.tags[VIEW_TAG])
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    params = set(children[0].data.params)
    columns = {f"params.`{p}`" for p in params} | {f"metrics.`{m}`" for r in children for m in r.data.metrics}
    assert set(view["selectedColumns"]) == columns and view["columnOrder"] == view["selectedColumns"]
    assert view["selectedColumns"][:5] == ["params.`method`", "params.`setting`", "metrics.`nfe`", "metrics.`nll_nats`",
                                           "metrics.`sliced_w2`"]  # fmt: skip
    filtered = _runs_of(uri, sweep, view["searchFilter"])
    assert sorted(r.info.run_id for r in filtered) == sorted(r.info.run_id for r in children)
    keys = [(k["mode"], k["groupByData"]) for k in view["groupBy"]["groupByKeys"]]
    assert keys == [("param", "method"), ("param", "setting")] and view["groupBy"]["aggregateFunction"] == "average"
    bars = view["compareRunCharts"]
    assert [b["metricKey"] for b in bars] == ["nfe", "nll_nats", "sliced_w2"] and {b["type"] for b in bars} == {"BAR"}


def test_smoke_sweep_with_the_embedded_defaults_and_tables_rebuilt_from_mlflow(tmp_path: Path):
    result = _fmx(["sweep", str(REPO / "sweeps" / "smoke.yaml")], tmp_path)
    assert "mlflow.db" in result.stderr  # the store's location is printed
    assert "| FM-OT |" in result.stdout  # stdout is a pipe, as a log is: the table in Markdown, never wrapped
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = _check_smoke_outputs(tmp_path, uri)
    # The Tune experiment ran exactly one trial per training configuration.
    trial_dirs = [p for p in (tmp_path / "results" / "smoke" / "ray" / "tune").iterdir() if p.is_dir()]
    assert len(trial_dirs) == 3
    # Tune stores only each trial's training key: the sweep (paths expanded from ${VAR}, the tracking URI)
    # reaches trials through Ray's object store, never Tune's params.json / params.pkl on storage.
    for trial_dir in trial_dirs:
        assert list(json.loads((trial_dir / "params.json").read_text())) == ["key"]
        assert b"tracking_uri" not in (trial_dir / "params.pkl").read_bytes()
    # A resumed sweep that has nothing left to do adds no run.
    before_ids = sorted(r.info.run_id for r in _runs_of(uri, "smoke"))
    _fmx(["sweep", str(REPO / "sweeps" / "smoke.yaml"), "--resume"], tmp_path)
    assert sorted(r.info.run_id for r in _runs_of(uri, "smoke")) == before_ids
    # `fmx tables` rebuilds both files, identical, from MLflow alone.
    shutil.copytree(tmp_path / "results", tmp_path / "before")
    shutil.rmtree(tmp_path / "results")
    rebuilt = fmx_here(["tables", "smoke", "--markdown"], tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "| method |" in rebuilt.stdout
    for name in ("runs.parquet", "table.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "before" / "smoke" / name), pd.read_parquet(tmp_path / "results" / "smoke" / name)
        )
    assert len(runs) == 6
    assert "cells: one seed's value (no std or interval from one seed)" in rebuilt.stdout and "95 %" not in rebuilt.stdout
    # The terminal table at 80 columns (as $COLUMNS says): every number on one line.
    narrow_env = fmx_env({"COLUMNS": "80"})
    narrow = run_fmx(["tables", "smoke"], tmp_path, narrow_env)
    cleanup_ray_tmp(narrow_env)
    shown = display_table(summarize(runs))
    assert narrow.returncode == 0 and "FM-OT" in narrow.stdout, narrow.stderr[-3000:]
    assert_numbers_whole([str(v) for column in shown.columns for v in shown[column]], narrow.stdout, 80)
    # A paired comparison from MLflow alone: with one seed it refuses a verdict, cell by cell.
    compared = fmx_here(["compare", "smoke", "FM-OT", "SM-VP", "--metric", "nfe", "--margin", "5"], tmp_path)
    assert compared.returncode == 0, compared.stderr
    assert compared.stdout.count("no verdict (1 seed)") == 2 and "dopri5_tol1e-05" in compared.stdout
    unknown = fmx_here(["compare", "smoke", "FM-OT", "FM-VE"], tmp_path)
    assert unknown.returncode == 2 and "no method 'FM-VE'" in unknown.stderr and "Traceback" not in unknown.stderr


PYTHON_API_SWEEP = """\
import sys
from orchestrator import load_results, run_sweep

outcome = run_sweep(sys.argv[1], tracking_uri=sys.argv[2])
rows = load_results("smoke", tracking_uri=sys.argv[2])
print("outcome", outcome.exit_code, outcome.trainings, len(outcome.runs), outcome.runs_path)
print("rows", len(rows), sorted(set(rows["trial_id"])), int((rows["status"] == "ok").sum()))
"""


def test_smoke_sweep_from_python_against_a_local_mlflow_server(tmp_path: Path):
    """The Python API a notebook uses (`from orchestrator import run_sweep, load_results`), against a tracking
    server: the same sweep, rows, tables and comparison view as the command line gives."""
    env = fmx_env()
    with mlflow_server(tmp_path) as uri:
        try:
            done = subprocess.run([str(Path(FMX).with_name("python")), "-c", PYTHON_API_SWEEP, str(REPO / "sweeps" / "smoke.yaml"), uri],
                                  cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
            left = leftover_ray_processes(env)
        finally:
            cleanup_ray_tmp(env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        assert not left, f"the local Ray of run_sweep outlived it: {left}"
        assert f"outcome 0 3 6 {tmp_path / 'results' / 'smoke' / 'runs.parquet'}" in done.stdout
        assert f"rows 6 {sorted(SMOKE_TRIALS)} 6" in done.stdout
        _check_smoke_outputs(tmp_path, uri)
        assert not (tmp_path / "mlflow.db").exists()
        assert any((tmp_path / "server-artifacts").rglob("evaluations.json"))


NAN_SWEEP = """\
name: nan
dataset: {name: 8gaussians}
model: {kind: mlp, hidden: 32, depth: 2}
train: {steps: 100, batch_size: 128, checkpoint_every: 50}
eval: {samples: 300, likelihood_points: 50, reference_tol: 1.0e-5}
grid: {path: [ot, vp], objective: [fm], solver: [rk4], nfe: [8]}
fault_injection: {nan_at_step: 60, trials: [vp-fm-independent-s0]}
max_concurrent_trials: 1  # see tests/conftest.py: ONE_TRIAL_AT_A_TIME
"""


@pytest.fixture(scope="module")
def local_ray():
    with module_ray() as ray:
        yield ray


def test_a_trial_whose_loss_goes_nan_is_recorded_as_failed_and_the_sweep_completes(tmp_path: Path, local_ray):
    (tmp_path / "nan.yaml").write_text(NAN_SWEEP)
    outcome, log = sweep_here(tmp_path / "nan.yaml")
    assert outcome.exit_code == 0 and outcome.failed_trials == 1, log
    runs = pd.read_parquet(tmp_path / "results" / "nan" / "runs.parquet").set_index("trial_id")
    assert runs.loc["ot-fm-independent-s0", "status"] == "ok"
    failed = runs.loc["vp-fm-independent-s0"]
    assert failed["status"] == "failed"
    assert "NonFiniteLossError" in failed["error"] and "step 60" in failed["error"]
    by_trial = {r.data.tags["fmx.trial_id"]: r for r in _runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "nan", TRAINING_RUNS)}
    assert by_trial["vp-fm-independent-s0"].info.status == "FAILED"
    assert "step 60" in by_trial["vp-fm-independent-s0"].data.tags["fmx.error"]
    assert by_trial["ot-fm-independent-s0"].info.status == "FINISHED"


RESUME_SWEEP = """\
name: resume
dataset: {name: checkerboard}
model: {kind: mlp, hidden: 64, depth: 3}
train: {steps: 1500, batch_size: 256, checkpoint_every: 100}
eval: {samples: 300, likelihood_points: 50, reference_tol: 1.0e-5}
grid: {pairs: [[ot, fm], [vp, fm], [vp, ddpm]], seed: [0, 1], solver: [euler, dopri5], nfe: [8], tol: [1.0e-4]}
"""


def _two_done_and_one_past_a_checkpoint(text: str) -> bool:
    """Two trials done (✓) and, after the second, a trial reported at step 200 or later (checkpoints every 100)."""
    done = [i for i, ch in enumerate(text) if ch == "✓"]
    if len(done) < 2:
        return False
    return any(int(step) >= 200 for step in re.findall(r" step (\d+)/1500 ", text[done[1]:]))


def test_a_sweep_whose_driver_is_killed_resumes_with_every_row_once(tmp_path: Path):
    (tmp_path / "resume.yaml").write_text(RESUME_SWEEP)
    env = fmx_env()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log = tmp_path / "first-run.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [FMX, "sweep", "resume.yaml"], cwd=tmp_path, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        # Kill the driver (and the local Ray it started) once two trials are done and another is mid-way past
        # a checkpoint, as its own progress lines say (reading the sqlite store meanwhile could race its schema
        # set-up). Two trials that finish together leave the next ones at step 0: wait for one past step 200.
        deadline = time.monotonic() + 400
        while not _two_done_and_one_past_a_checkpoint(log.read_text()):
            assert proc.poll() is None, f"the sweep ended before it could be interrupted:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no trial finished in time:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
    finally:
        kill_session(proc.pid)
        proc.wait()
        cleanup_ray_tmp(env)
    assert not (tmp_path / "results" / "resume" / "runs.parquet").exists()
    refused = run_fmx(["sweep", "resume.yaml"], tmp_path)  # a rerun without --resume must not mix sweeps
    assert refused.returncode == 2 and "was interrupted" in refused.stderr and "--resume" in refused.stderr
    # --resume finishes the interrupted run as it was started: an edited file is refused until restored.
    (tmp_path / "resume.yaml").write_text(RESUME_SWEEP.replace("seed: [0, 1]", "seed: [0, 1, 2]"))
    edited = run_fmx(["sweep", "resume.yaml", "--resume"], tmp_path)
    assert edited.returncode == 2 and "has changed since sweep 'resume' was interrupted" in edited.stderr, edited.stderr
    (tmp_path / "resume.yaml").write_text(RESUME_SWEEP)
    resumed = _fmx(["sweep", "resume.yaml", "--resume"], tmp_path)
    # A new pass over what the killed one left: the trials finished before the kill are reused, not rerun.
    planned = re.search(r"(\d+) to train, (\d+) reused", resumed.stderr)
    assert planned is not None and int(planned[2]) >= 2 and int(planned[1]) + int(planned[2]) == 6, resumed.stderr[-3000:]
    assert f"{planned[1]}/{planned[1]} done" in resumed.stderr
    runs = pd.read_parquet(tmp_path / "results" / "resume" / "runs.parquet")
    assert len(runs) == 6 * 2
    assert not runs.duplicated(["trial_id", "solver", "tol", "nfe_budget", "train_step"]).any()
    assert (runs["status"] == "ok").all() and (runs["train_steps"] == 1500).all()
    # Trials that were mid-way went on from a checkpoint instead of starting over.
    assert (runs["resumed_from_step"] > 0).any()
    mlflow_runs = _runs_of(uri, "resume")
    assert all(r.info.status == "FINISHED" for r in mlflow_runs)
    parents = [r for r in mlflow_runs if "mlflow.parentRunId" not in r.data.tags]
    children = [(r.data.tags["mlflow.parentRunId"], r.data.tags["fmx.evaluation"]) for r in mlflow_runs if r not in parents]
    assert len(parents) == 6 and len(children) == len(set(children)) == len(runs)  # no evaluation twice
    # The comparison view of this two-seed sweep: MLflow's groups of method x setting hold both seeds each.
    evaluations = [r for r in mlflow_runs if r not in parents]
    _check_comparison_view(uri, evaluations, "resume")
    groups = Counter((r.data.params["method"], r.data.params["setting"]) for r in evaluations)
    assert set(groups) == {(m, s) for m in ("FM-OT", "FM-VP", "DDPM-VP") for s in ("euler_nfe8", "dopri5_tol1e-04")}
    assert set(groups.values()) == {2}


def test_a_trial_that_cannot_import_its_code_is_reported_and_the_command_fails(tmp_path: Path):
    """The driver never imports PyTorch, so a broken install shows only inside the trials: the command must
    still name the cause and fail, not end quietly with no rows."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "torch.py").write_text('raise ImportError("torch deliberately broken by this test")\n')
    env = fmx_env({"PYTHONPATH": str(broken)})
    try:
        result = run_fmx(["sweep", str(REPO / "sweeps" / "smoke.yaml")], tmp_path, env)
    finally:
        cleanup_ray_tmp(env)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    for trial in SMOKE_TRIALS:
        assert f"trial {trial} failed before it recorded anything" in result.stderr
    assert "torch deliberately broken by this test" in result.stderr


CORRUPT_SWEEP = """\
name: corrupt
dataset: {name: image_folder, root: images, image_size: 8, channels: 1}
model: {kind: unet, model_channels: 8, num_heads: 1}
train: {steps: 10, batch_size: 4}
eval: {samples: 4, likelihood_points: 0, reference_tol: null}
grid: {path: [ot], objective: [fm], seed: [0], solver: [euler], nfe: [4]}
"""


def test_a_trial_that_fails_before_training_is_recorded_as_failed(tmp_path: Path, local_ray):
    """An unreadable file in a data folder passes validation (the folder exists) and fails in the trial while
    it loads the data: the failure must still reach MLflow and the Parquet rows with its reason."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "corrupt.yaml").write_text(CORRUPT_SWEEP)
    outcome, log = sweep_here(tmp_path / "corrupt.yaml")
    assert outcome.exit_code == 0 and outcome.failed_trials == 1, log
    runs = pd.read_parquet(tmp_path / "results" / "corrupt" / "runs.parquet")
    assert len(runs) == 1 and runs.loc[0, "status"] == "failed" and runs.loc[0, "train_steps"] == 0
    assert runs.loc[0, "error"].startswith("UnidentifiedImageError") and "broken.png" in runs.loc[0, "error"]
    (mlflow_run,) = _runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "corrupt", TRAINING_RUNS)
    assert mlflow_run.info.status == "FAILED"
    assert mlflow_run.data.tags["fmx.error"] == runs.loc[0, "error"]
    # Once the file is mended, --resume retries the trial that failed before its first report.
    from PIL import Image

    Image.new("L", (8, 8), color=128).save(tmp_path / "images" / "broken.png")
    outcome, log = sweep_here(tmp_path / "corrupt.yaml", resume=True)
    assert outcome.exit_code == 0 and outcome.failed_trials == 0, log
    runs = pd.read_parquet(tmp_path / "results" / "corrupt" / "runs.parquet")
    assert len(runs) == 1 and runs.loc[0, "status"] == "ok" and runs.loc[0, "train_steps"] == 10, runs.loc[0, "error"]
    (mlflow_run,) = _runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "corrupt", TRAINING_RUNS)
    assert mlflow_run.info.status == "FINISHED" and "fmx.error" not in mlflow_run.data.tags
