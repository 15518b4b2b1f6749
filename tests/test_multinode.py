"""`fmx sweep --address` on a real multi-node Ray cluster on this machine: spread, a lost node, a lost driver.

The cluster is laid out like cluster.yaml's: a head with no CPUs (it only hosts the GCS and the sweep's
driver) and 1-CPU worker nodes, each its own raylet started by `ray.cluster_utils.Cluster`; the MLflow
server is a separate process, as on the head of a real cluster. The sweep runs through the CLI against the
cluster's GCS address. All nodes see this machine's disk, standing in for the shared `storage_path` (EFS)
of a real cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient

from orchestrator.plan import TrainingKey
from tests.cli_helpers import TRAINING_RUNS, FMX, cleanup_ray_tmp, fmx_env
from tests.mlflow_server import free_port, mlflow_server

pytestmark = pytest.mark.slow

WORKER_NODES = 3
STEPS = 1200
EVERY = 100
ROW_KEY = ["trial_id", "solver", "tol", "nfe_budget", "train_step"]


def _sweep_yaml(name: str, storage: Path, pairs: str, extra: str = "") -> str:
    return f"""\
name: {name}
dataset: {{name: checkerboard}}
model: {{kind: mlp, hidden: 64, depth: 3}}
train: {{steps: {STEPS}, batch_size: 256, checkpoint_every: {EVERY}, max_failures: 2}}
eval: {{samples: 300, likelihood_points: 50, reference_tol: 1.0e-5}}
grid: {{pairs: {pairs}, seed: [0], solver: [euler, dopri5], nfe: [8], tol: [1.0e-4]}}
storage_path: {storage}
{extra}"""


@dataclass
class LocalCluster:
    cluster: Any  # ray.cluster_utils.Cluster: each node a raylet of its own, on this machine

    @property
    def address(self) -> str:
        return self.cluster.address

    def worker_ids(self) -> set[str]:
        return {node.node_id for node in self.cluster.worker_nodes}

    def kill_node(self, node_id: str) -> None:
        """SIGKILL every process of that node (raylet, object store, its workers lose their raylet)."""
        node = next(n for n in self.cluster.worker_nodes if n.node_id == node_id)
        self.cluster.remove_node(node, allow_graceful=False)

    def add_worker(self) -> str:
        return self.cluster.add_node(num_cpus=1).node_id


@contextmanager
def _local_cluster() -> Iterator[LocalCluster]:
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="fmxmn", dir="/tmp")  # Ray's socket paths must stay short
    with pytest.MonkeyPatch.context() as env:
        for key in [k for k in os.environ if k.startswith(("MLFLOW_", "RAY_"))]:
            env.delenv(key)
        env.setenv("RAY_TMPDIR", temp_dir)  # ray_current_cluster and the sessions go here, not /tmp/ray
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False, "dashboard_port": free_port()},
        )
        try:
            for _ in range(WORKER_NODES):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            yield LocalCluster(cluster)
        finally:
            cluster.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster_and_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, str]]:
    """The cluster and an MLflow server (as on the head), started side by side: each takes 10-25 s here."""
    with ExitStack() as server, ThreadPoolExecutor(max_workers=1) as pool:
        uri = pool.submit(server.enter_context, mlflow_server(tmp_path_factory.mktemp("mlflow")))
        with _local_cluster() as cluster:
            yield cluster, uri.result()


def _mlflow_runs(uri: str, sweep: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(sweep)
    return [] if experiment is None else client.search_runs([experiment.experiment_id], TRAINING_RUNS)


def _checkpointed_steps(tune_dir: Path) -> dict[str, int]:
    """Per trial id, the step of the latest checkpoint the driver has recorded and saved to storage (0: none).

    Tune syncs result.json with its experiment state, so a restore or a retry resumes at least from there.
    """
    steps: dict[str, int] = {}
    for trial_dir in tune_dir.glob("training_trial_*"):
        try:
            key = TrainingKey(**json.loads((trial_dir / "params.json").read_text())["key"])
            lines = (trial_dir / "result.json").read_text().splitlines()
            last = json.loads(lines[-1]) if lines else {}
        except (OSError, ValueError, KeyError):
            continue  # being written
        steps[key.trial_id] = STEPS if last.get("done") else int(last.get("step", 0))
    return steps


def _start_sweep(file: Path, cluster: LocalCluster, uri: str, *more: str) -> tuple[subprocess.Popen, dict[str, str]]:
    env = fmx_env()
    with open(file.parent / "driver.log", "a") as log:
        proc = subprocess.Popen(
            [FMX, "sweep", file.name, "--address", cluster.address, "--tracking-uri", uri, *more],
            cwd=file.parent, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return proc, env


def _wait_for(what: str, proc: subprocess.Popen, check: Callable[[], object], timeout: float = 180) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        assert proc.poll() is None, f"the sweep ended before {what}"
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def _finish(proc: subprocess.Popen, workdir: Path, timeout: float = 300) -> None:
    proc.wait(timeout=timeout)
    assert proc.returncode == 0, (workdir / "driver.log").read_text()[-6000:]


def _stop(proc: subprocess.Popen, env: dict[str, str]) -> None:
    """SIGKILL the driver if it still runs (with --address it started no Ray processes of its own)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    cleanup_ray_tmp(env)


def _check_every_row_once(workdir: Path, uri: str, sweep: str, trials: set[str]) -> pd.DataFrame:
    """Each trial's rows exactly once, all trained to the end; one FINISHED MLflow run per trial."""
    runs = pd.read_parquet(workdir / "results" / sweep / "runs.parquet")
    assert set(runs["trial_id"]) == trials and len(runs) == 2 * len(trials)
    assert not runs.duplicated(ROW_KEY).any()
    assert (runs["status"] == "ok").all(), runs[["trial_id", "error"]]
    assert (runs["train_steps"] == STEPS).all()
    mlflow_runs = _mlflow_runs(uri, sweep)
    assert sorted(r.data.tags["fmx.trial_id"] for r in mlflow_runs) == sorted(trials)
    assert all(r.info.status == "FINISHED" for r in mlflow_runs)
    node_of = runs.groupby("trial_id")["node_id"].first()
    assert {r.data.tags["fmx.trial_id"]: r.data.tags["fmx.node_id"] for r in mlflow_runs} == node_of.to_dict()
    assert {r.info.run_id for r in mlflow_runs} == set(runs["mlflow_run_id"])
    return runs


def test_a_sweep_spreads_over_worker_nodes_and_survives_losing_one(cluster_and_server, tmp_path: Path):
    ray_cluster, tracking_uri = cluster_and_server
    sweep, storage = "nodeloss", tmp_path / "shared"
    trials = {"ot-fm-independent-s0", "vp-fm-independent-s0", "vp-ddpm-independent-s0"}
    file = tmp_path / "nodeloss.yaml"
    file.write_text(_sweep_yaml(sweep, storage, "[[ot, fm], [vp, fm], [vp, ddpm]]"))
    proc, env = _start_sweep(file, ray_cluster, tracking_uri)
    try:
        # One trial a node (each has 1 CPU): wait until one has checkpointed but is far from done, then
        # kill the node under it, as a spot reclaim would, and add a fresh node as the autoscaler would.
        def victim() -> tuple[str, str, int] | None:
            steps = _checkpointed_steps(storage / sweep / "tune")
            for run in _mlflow_runs(tracking_uri, sweep):
                trial, node = run.data.tags.get("fmx.trial_id"), run.data.tags.get("fmx.node_id")
                if run.info.status == "RUNNING" and node and EVERY <= steps.get(trial, 0) <= STEPS // 2:
                    return trial, node, steps[trial]
            return None

        killed_trial, killed_node, killed_at = _wait_for("a trial to checkpoint", proc, victim)
        assert killed_node in ray_cluster.worker_ids()
        ray_cluster.kill_node(killed_node)
        ray_cluster.add_worker()
        _finish(proc, tmp_path)
    finally:
        _stop(proc, env)
    runs = _check_every_row_once(tmp_path, tracking_uri, sweep, trials)
    by_trial = runs.groupby("trial_id").first()
    # The trials ran on several nodes, the head (0 CPUs) and the dead node excepted.
    assert by_trial["node_id"].nunique() >= 2
    assert set(by_trial["node_id"]) <= ray_cluster.worker_ids()
    # The trial that lost its node went on elsewhere from its checkpoint instead of starting over.
    lost = by_trial.loc[killed_trial]
    assert lost["node_id"] != killed_node
    assert EVERY <= lost["resumed_from_step"] < STEPS and lost["resumed_from_step"] % EVERY == 0
    assert lost["resumed_from_step"] >= killed_at
    assert (by_trial.drop(index=killed_trial)["resumed_from_step"] == 0).all()


def test_a_sweep_whose_driver_is_killed_resumes_on_the_same_cluster(cluster_and_server, tmp_path: Path):
    ray_cluster, tracking_uri = cluster_and_server
    sweep, storage = "driverloss", tmp_path / "shared"
    trials = {"ot-fm-independent-s0", "vp-fm-independent-s0", "vp-ddpm-independent-s0"}
    file = tmp_path / "driverloss.yaml"
    # Two at a time: the third starts once another is done, so some are done and one is mid-way at the kill.
    file.write_text(_sweep_yaml(sweep, storage, "[[ot, fm], [vp, fm], [vp, ddpm]]", "max_concurrent_trials: 2\n"))
    proc, env = _start_sweep(file, ray_cluster, tracking_uri)
    try:

        def finished_and_midway() -> dict[str, int] | None:
            steps = _checkpointed_steps(storage / sweep / "tune")
            runs = _mlflow_runs(tracking_uri, sweep)
            finished = {r.data.tags["fmx.trial_id"] for r in runs if r.info.status == "FINISHED"}
            midway = {t: s for t, s in steps.items() if t not in finished and 2 * EVERY <= s <= STEPS // 2}
            return midway if finished and midway else None

        midway = _wait_for("one trial done and another mid-way", proc, finished_and_midway)
    finally:
        _stop(proc, env)  # the driver dies; the cluster, its checkpoints and MLflow stay
    assert not (tmp_path / "results" / sweep / "runs.parquet").exists()
    proc, env = _start_sweep(file, ray_cluster, tracking_uri, "--resume")
    try:
        _finish(proc, tmp_path)
    finally:
        _stop(proc, env)
    runs = _check_every_row_once(tmp_path, tracking_uri, sweep, trials)
    resumed = runs.groupby("trial_id")["resumed_from_step"].first()
    for trial, step in midway.items():
        assert step <= resumed[trial] < STEPS, (trial, step, resumed.to_dict())
