"""eval.fid end to end: a digits sweep through the CLI with a scripted stand-in detector (real Ray, real MLflow
store, real files) gives every row its FID and protocol, a child metric `fid` and an FID column; its reference
statistics, computed once by the trial and cached on the sweep's storage, are read back by a second evaluation;
and a detector that is not the file its checksum names is refused before anything runs."""

from __future__ import annotations

import hashlib
import math
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from fm_core.fid import FID_PROTOCOL
from orchestrator.cell_store import cell_dir, get_dir, step_dir
from orchestrator.cells import training_cell
from orchestrator.compare import metric_columns
from orchestrator.evaluation import Evaluator
from orchestrator.folders import FID_REFERENCE_DIR, fid_reference_cache
from orchestrator.model_state import ModelState
from orchestrator.plan import plan_sweep
from orchestrator.tables import display_table
from orchestrator.validation import load_sweep
from tests.cli_helpers import TRAINING_RUNS, fmx_env, run_fmx
from tests.fid_helpers import save_stand_in_detector

pytestmark = pytest.mark.slow

SWEEP = """\
name: fid_sweep
dataset: {name: digits}
model: {kind: unet, model_channels: 8, num_res_blocks: 1, channel_mult: [1, 2], attention_resolutions: [4], num_heads: 2}
train: {steps: 20, batch_size: 32, checkpoint_every: 20, log_every: 10}
eval:
  samples: 32
  likelihood_points: 0
  reference_tol: null
  batch_size: 24                # the FID draw goes through the solver 24, 24 and 16 at a time
  fid: {detector: "${FID_DETECTOR}", detector_sha256: SHA, samples: 64, batch_size: 16, reference: {split: train}}
grid: {pairs: [[ot, fm]], seed: [0], solver: [euler, rk4], nfe: [4]}
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("fid_sweep")
    detector = folder / "inception-2015-12-05.pt"
    sha = save_stand_in_detector(detector)
    (folder / "fid.yaml").write_text(SWEEP.replace("SHA", "null"))
    env = fmx_env({"FID_DETECTOR": str(detector)})
    done = run_fmx(["sweep", "fid.yaml"], folder, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return {"folder": folder, "detector": detector, "sha": sha, "env": env}


def test_a_sweep_with_eval_fid_gives_rows_metrics_and_a_table_column(swept: dict):
    results = swept["folder"] / "results" / "fid_sweep"
    runs = pd.read_parquet(results / "runs.parquet")
    assert len(runs) == 2 and (runs["status"] == "ok").all(), runs[["solver", "error"]]
    assert runs["fid"].gt(0).all() and runs["fid"].map(math.isfinite).all()
    assert runs["fid"].nunique() == 2  # each solver setting its own samples
    protocol = runs[["fid_samples", "fid_reference", "fid_detector_sha256", "fid_protocol"]].drop_duplicates()
    assert protocol.values.tolist() == [[64, "train", swept["sha"], FID_PROTOCOL]]
    assert runs["fid_reference_digest"].nunique() == 1 and len(runs["fid_reference_digest"][0]) == 16
    # MLflow: a child metric per evaluation, the detector's sha256 and path (as written) on the training run.
    client = MlflowClient(tracking_uri=f"sqlite:///{swept['folder'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fid_sweep")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string=TRAINING_RUNS)
    assert parent.data.params["eval.fid.detector"] == "${FID_DETECTOR}"
    assert parent.data.params["eval.fid.detector_sha256"] == swept["sha"]
    children = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_solver = {c.data.params["solver"]: c.data.metrics["fid"] for c in children}
    expected = dict(zip(runs["solver"], runs["fid"], strict=True))
    assert by_solver.keys() == expected.keys()
    assert all(by_solver[s] == pytest.approx(expected[s], rel=1e-3) for s in expected)  # 4 significant digits
    # The tables: an FID column with its interval over seeds, and `fmx compare --metric fid`.
    table = pd.read_parquet(results / "table.parquet")
    assert {"fid_mean", "fid_std", "fid_ci_low", "fid_ci_high", "fid_reference_digest"} <= set(table.columns)
    shown = display_table(table)
    assert "FID" in shown.columns and all(cell != "-" for cell in shown["FID"])
    assert metric_columns(runs)["fid"] == "fid"


def test_the_reference_statistics_are_cached_once_and_read_by_a_later_evaluation(swept: dict, monkeypatch: pytest.MonkeyPatch):
    folder = swept["folder"]
    storage = str(folder / "results" / "fid_sweep" / "ray")
    cache = fid_reference_cache(storage)
    assert cache == Path(storage) / FID_REFERENCE_DIR
    (entry,) = cache.iterdir()  # one entry, named by the content it was computed from
    before = entry.stat()
    # A second evaluation of the stored weights of step 20 (as a later pass's evaluation trial does).
    monkeypatch.setenv("FID_DETECTOR", str(swept["detector"]))
    config = load_sweep(folder / "fid.yaml")
    key = plan_sweep(config).trainings[0]
    state = ModelState(config.for_training(key), key)
    with tempfile.TemporaryDirectory() as local:
        state.restore_weights(get_dir(step_dir(cell_dir(storage, training_cell(config, key)), 20), Path(local)))
    evaluator = Evaluator(state, cache)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trial computed it (cpus_per_worker: 1)
    try:
        rows, _ = evaluator.evaluate([plan_sweep(config).settings[0]])
    finally:
        torch.set_num_threads(threads)
    assert evaluator.fid is not None and evaluator.fid.reference_cached is True
    after = entry.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # read, not written again
    runs = pd.read_parquet(folder / "results" / "fid_sweep" / "runs.parquet")
    swept_row = runs[runs["solver"] == rows[0].solver].iloc[0]
    assert rows[0].fid_reference_digest == swept_row["fid_reference_digest"]
    assert rows[0].fid == pytest.approx(swept_row["fid"], rel=1e-4)  # the same weights, noise and reference


def test_a_detector_that_is_not_the_checksummed_file_is_refused_before_anything_runs(tmp_path: Path):
    detector = tmp_path / "detector.pt"
    sha = save_stand_in_detector(detector)
    wrong = hashlib.sha256(b"another file").hexdigest()
    (tmp_path / "fid.yaml").write_text(SWEEP.replace("SHA", wrong))
    done = run_fmx(["sweep", "fid.yaml"], tmp_path, fmx_env({"FID_DETECTOR": str(detector)}), timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "eval.fid.detector_sha256" in done.stderr and sha in done.stderr and wrong in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.pt", "fid.yaml"]  # nothing written
