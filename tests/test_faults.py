"""Faults during a sweep, through the real CLI: a killed worker, Ctrl-C, an MLflow outage, a lost store, a
second sweep of the same file. Nothing a trial computed is lost, every MLflow run ends FINISHED or FAILED
with rows and a reason, and `--resume` repairs the rest."""

from __future__ import annotations

import errno
import ipaddress
import os
import pickle
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import pytest
from mlflow import MlflowClient

from tests.cli_helpers import TRAINING_RUNS, FMX, cleanup_ray_tmp, fmx_env, kill_session, run_fmx
from tests.mlflow_server import MlflowServer

pytestmark = pytest.mark.slow

STEPS = 900
FAULT_SWEEP = f"""\
name: faults
dataset: {{name: checkerboard}}
model: {{kind: mlp, hidden: 64, depth: 3}}
train: {{steps: {STEPS}, batch_size: 256, checkpoint_every: 100, log_every: 50}}
eval: {{samples: 200, likelihood_points: 20, reference_tol: null}}
grid: {{pairs: [[ot, fm], [vp, fm]], seed: [0, 1], solver: [euler], nfe: [4]}}
"""
TRIALS = {f"{p}-fm-independent-s{s}" for p in ("ot", "vp") for s in (0, 1)}
# For the faults that hit the sweep as a whole (an outage of its store, a full disk), not one trial beside
# another: one trial at a time (tests/conftest.py: ONE_TRIAL_AT_A_TIME), and one seed: a training of each path,
# the first hit by the fault and the second started after it (four trainings one after another cost each of
# these tests about 15 s of training more, for no other case).
ONE_SEED_SWEEP = FAULT_SWEEP.replace("seed: [0, 1]", "seed: [0]")
ONE_AT_A_TIME = ONE_SEED_SWEEP + "max_concurrent_trials: 1\n"
ONE_SEED = {trial for trial in TRIALS if trial.endswith("-s0")}


class Sweep:
    """`fmx sweep` started in the background, as a user would in a terminal, with its stderr in a file."""

    def __init__(self, cwd: Path, args: list[str], log_dir: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.env = fmx_env(extra_env)
        (log_dir or cwd).mkdir(exist_ok=True)
        self.log = (log_dir or cwd) / "sweep.log"
        with open(self.log, "w") as stderr:
            self.proc = subprocess.Popen(
                [FMX, "sweep", *args], cwd=cwd, env=self.env, start_new_session=True, stdout=subprocess.PIPE,
                stderr=stderr, text=True,
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, predicate: Callable[[str], bool], what: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.text()):
            assert self.proc.poll() is None, f"the sweep ended before {what}:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.text()[-3000:]}"
            time.sleep(0.3)

    def trial_output(self) -> str:
        """What the trials printed so far (Ray keeps their stdout and stderr in its session logs)."""
        texts = []
        for f in Path(self.env["RAY_TMPDIR"]).rglob("worker-*.*"):
            try:
                texts.append(f.read_text(errors="replace"))
            except OSError:  # a log Ray removed meanwhile
                continue
        return "".join(texts)

    def finish(self, timeout: float = 400) -> tuple[int, str, str]:
        try:
            stdout, _ = self.proc.communicate(timeout=timeout)
        finally:
            kill_session(self.proc.pid)
            self.worker_output = self.trial_output()  # before Ray's session logs are removed
            cleanup_ray_tmp(self.env)
        return self.proc.returncode, stdout, self.text()


#: The same file with other evaluation settings: every trained cell is evaluated again from its stored weights
#: (an evaluation-only pass), each evaluation long enough (a 3000-point likelihood) to be caught running.
EVAL_ONLY_SWEEP = FAULT_SWEEP.replace("likelihood_points: 20", "likelihood_points: 3000")


def _eval_trial_started(text: str) -> bool:
    """An evaluation-only pass has started a trial and none has finished yet."""
    return "to evaluate from stored weights" in text and "▶" in text and "✓" not in text


class _Payload:
    """A pickle that, once unpickled, writes `marker` (what planted code on a sweep's storage could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _ray_processes(env: dict[str, str]) -> list[psutil.Process]:
    marker = env["RAY_TMPDIR"]
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or []) or proc.environ().get("RAY_TMPDIR") == marker:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _mlflow_runs(uri: str, sweep: str) -> dict[str, object]:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(sweep)
    assert experiment is not None
    return {r.data.tags["fmx.trial_id"]: r for r in client.search_runs([experiment.experiment_id], TRAINING_RUNS)}


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 60 MB tmpfs to fill up (needs the right to mount, as root on this project's machines)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill up: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    """Take all the free space of folder's filesystem (writing on while others write too)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                continue
    return filler


def _rows(workdir: Path, sweep: str = "faults") -> pd.DataFrame:
    return pd.read_parquet(workdir / "results" / sweep / "runs.parquet")


def _assert_all_finished(workdir: Path, uri: str, trials: set[str] = TRIALS) -> pd.DataFrame:
    runs = _rows(workdir)
    assert set(runs["trial_id"]) == trials and len(runs) == len(trials), runs[["trial_id", "status", "error"]]
    assert (runs["status"] == "ok").all(), runs[["trial_id", "error"]]
    assert (runs["train_steps"] == STEPS).all()
    client = MlflowClient(tracking_uri=uri)
    for trial, run in _mlflow_runs(uri, "faults").items():
        assert run.info.status == "FINISHED", trial
        assert "fmx.error" not in run.data.tags and "fmx.interrupted" not in run.data.tags, run.data.tags
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert len(steps) == len(set(steps)) == STEPS // 50, f"{trial}: loss logged twice for some steps"
        # The evaluation's sample plot and arrays reach the run, also when the trial could not send them.
        held = {a.path for folder in ("plots", "samples") for a in client.list_artifacts(run.info.run_id, folder)}
        assert {f"plots/samples_step{STEPS}.png", f"samples/samples_step{STEPS}.npz", "plots/loss_curve.png"} <= held, (trial, held)
    return runs


def test_a_killed_worker_is_recorded_failed_and_resume_retries_it(tmp_path: Path):
    """kill -9 of the Ray worker running a trial: the trial ends FAILED in MLflow with its reason and rows, the
    summary counts it, and --resume retries it from its checkpoint. While the sweep runs: its local Ray listens
    on the loopback interface only, and a second `fmx sweep` of the same file in the same folder is refused."""
    (tmp_path / "faults.yaml").write_text(FAULT_SWEEP)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = Sweep(tmp_path, ["faults.yaml"])
    # Both running trials past a checkpoint, none done: whichever worker is killed has something to resume from.
    sweep.wait_for(
        lambda text: len(re.findall(rf"· (\S+) step 200/{STEPS} ", text)) >= 2 and "✓" not in text,
        "two trials past step 200",
    )
    workers = [p for p in _ray_processes(sweep.env) if "training_trial" in p.name() or "ImplicitFunc" in p.name()]
    assert workers, [p.name() for p in _ray_processes(sweep.env)]
    workers[0].kill()

    listening = []
    for proc in _ray_processes(sweep.env):
        try:
            listening += [(proc.name(), c.laddr) for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    names = {name for name, _ in listening}
    assert {"gcs_server", "raylet"} <= names, listening
    exposed = [(n, a) for n, a in listening if not ipaddress.ip_address(a.ip.removeprefix("::ffff:")).is_loopback]
    assert not exposed, f"the local Ray listens beyond 127.0.0.1: {exposed}"

    second = run_fmx(["sweep", "faults.yaml"], tmp_path)
    assert second.returncode == 2 and "already running" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr

    code, stdout, log = sweep.finish()
    assert code == 0, log[-3000:]
    assert "(1 failed, 0 interrupted)" in stdout, stdout
    runs = _rows(tmp_path).set_index("trial_id")
    assert set(runs.index) == TRIALS
    failed = runs[runs["status"] != "ok"]
    assert len(failed) == 1, runs[["status", "error"]]
    assert "died" in failed["error"].iloc[0].lower() or "actor" in failed["error"].iloc[0].lower(), failed["error"].iloc[0]
    by_trial = _mlflow_runs(uri, "faults")
    assert {r.info.status for r in by_trial.values()} == {"FINISHED", "FAILED"}
    killed = by_trial[failed.index[0]]
    assert killed.info.status == "FAILED" and killed.data.tags["fmx.error"] == failed["error"].iloc[0]

    resumed = run_fmx(["sweep", "faults.yaml", "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = _assert_all_finished(tmp_path, uri).set_index("trial_id")
    assert runs.loc[failed.index[0], "resumed_from_step"] > 0  # from its checkpoint, not from scratch

    # kill -9 of a worker in an evaluation-only pass: its trial ends with failed rows and their reason (it
    # had none: 4 rows became 3), and the command counts it.
    (tmp_path / "faults.yaml").write_text(EVAL_ONLY_SWEEP)
    evaluating = Sweep(tmp_path, ["faults.yaml"], log_dir=tmp_path / "eval")
    evaluating.wait_for(_eval_trial_started, "an evaluation trial started")
    deadline = time.monotonic() + 60
    while not (workers := [p for p in _ray_processes(evaluating.env) if "training_trial" in p.name() or "ImplicitFunc" in p.name()]):
        assert time.monotonic() < deadline, [p.name() for p in _ray_processes(evaluating.env)]
        time.sleep(0.1)
    workers[0].kill()
    code, stdout, log = evaluating.finish()
    assert code == 0 and "Traceback" not in log, log[-3000:]
    runs = _rows(tmp_path)
    assert set(runs["trial_id"]) == TRIALS and len(runs) == len(TRIALS), runs[["trial_id", "status", "error"]]
    failed = runs[runs["status"] != "ok"]
    assert len(failed) == 1 and re.search("died|actor", failed["error"].iloc[0], re.IGNORECASE), failed[["trial_id", "error"]]
    assert "(1 failed, 0 interrupted)" in stdout and f"{len(TRIALS)} evaluations (1 failed)" in stdout, stdout


def test_ctrl_c_exits_130_marks_the_interrupted_runs_and_resume_finishes_them(tmp_path: Path):
    (tmp_path / "faults.yaml").write_text(FAULT_SWEEP)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = Sweep(tmp_path, ["faults.yaml"])
    sweep.wait_for(lambda text: f"step 300/{STEPS}" in text, "a trial reached step 300")
    os.kill(sweep.proc.pid, signal.SIGINT)  # what Ctrl-C sends the driver
    code, stdout, log = sweep.finish(timeout=120)
    assert code == 130, log[-3000:]
    assert "fmx sweep faults.yaml --resume" in log
    runs = _rows(tmp_path)
    assert set(runs["trial_id"]) == TRIALS  # every trial has its row, finished or not
    interrupted = runs[runs["status"] != "ok"]
    assert len(interrupted) >= 1 and interrupted["error"].str.contains("interrupted").all()
    by_trial = _mlflow_runs(uri, "faults")
    assert "RUNNING" not in {r.info.status for r in by_trial.values()}
    for trial in interrupted["trial_id"]:
        assert by_trial[trial].info.status == "FAILED" and by_trial[trial].data.tags.get("fmx.interrupted") == "1"

    # Code planted in the interrupted pass's Tune state (the storage is untrusted) never runs: fmx does not
    # hand Tune's pickles back to it, and the trainings still continue from their own checkpoints.
    marker = tmp_path / "payload-ran"
    tune = tmp_path / "results" / "faults" / "ray" / "tune"
    planted = [tune / "tuner.pkl", *tune.glob("basic-variant-state-*.json"), *tune.glob("*/params.pkl")]
    assert len(planted) >= 3 and len({p.name.split("-")[0] for p in planted}) == 3, planted
    for path in planted:
        path.write_bytes(pickle.dumps(_Payload(marker)))
    resumed = run_fmx(["sweep", "faults.yaml", "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not marker.exists()
    runs = _assert_all_finished(tmp_path, uri).set_index("trial_id")
    assert (runs.loc[interrupted["trial_id"], "resumed_from_step"] > 0).any()  # those that had one: from it

    # Ctrl-C during an evaluation-only pass: exit 130, and runs.parquet as it was (it was exit 1 with a pandas
    # traceback: none of the file's evaluations was in yet to show).
    parquet = tmp_path / "results" / "faults" / "runs.parquet"
    before = parquet.read_bytes()
    (tmp_path / "faults.yaml").write_text(EVAL_ONLY_SWEEP)
    evaluating = Sweep(tmp_path, ["faults.yaml"], log_dir=tmp_path / "eval")
    evaluating.wait_for(_eval_trial_started, "an evaluation trial started")
    os.kill(evaluating.proc.pid, signal.SIGINT)
    code, stdout, log = evaluating.finish(timeout=120)
    assert code == 130 and "Traceback" not in log, log[-3000:]
    assert "fmx sweep faults.yaml --resume" in log and "interrupted)" in stdout, stdout
    assert parquet.read_bytes() == before


def test_an_mlflow_outage_mid_sweep_loses_nothing(tmp_path: Path):
    """The real server stops while trials train and log, until they have failed to reach it and retried with
    back-off for a few seconds; once it is back, every row arrives."""
    (tmp_path / "faults.yaml").write_text(ONE_AT_A_TIME)
    server = MlflowServer(tmp_path)
    server.start()
    try:
        sweep = Sweep(tmp_path, ["faults.yaml", "--tracking-uri", server.uri])
        sweep.wait_for(lambda text: f"step 100/{STEPS}" in text, "a trial started training")
        server.stop()
        # Down until a trial has hit the outage, then 5 s more: its retries at 1 s and 2 s fail too (a fixed
        # 20 s outage made the trials wait out the 8 s and 16 s back-offs as well, for no more coverage).
        deadline = time.monotonic() + 120
        while "MLflow call failed" not in sweep.trial_output():
            assert sweep.proc.poll() is None, f"the sweep ended during the outage:\n{sweep.text()[-3000:]}"
            assert time.monotonic() < deadline, f"no trial hit the outage:\n{sweep.text()[-3000:]}"
            time.sleep(0.3)
        time.sleep(5)
        server.start()
        code, stdout, log = sweep.finish()
        assert code == 0, log[-3000:]
        assert "MLflow call failed" in sweep.worker_output and "retrying in" in sweep.worker_output  # it did hit them
        _assert_all_finished(tmp_path, server.uri, ONE_SEED)
    finally:
        server.stop()


def test_an_outage_longer_than_the_retry_budget_ends_with_exit_1_and_resume_records_every_row(tmp_path: Path):
    """With a 3 s retry budget the server stays down past it: the trials that cannot record end failed, the
    command says to resume once the store is back (exit 1, one line, no traceback), and `--resume` against the
    restarted server then records every row exactly once."""
    (tmp_path / "faults.yaml").write_text(ONE_AT_A_TIME)
    server = MlflowServer(tmp_path)
    server.start()
    try:
        sweep = Sweep(tmp_path, ["faults.yaml", "--tracking-uri", server.uri], extra_env={"FMX_MLFLOW_RETRY_SECONDS": "3"})
        sweep.wait_for(lambda text: f"step 100/{STEPS}" in text, "a trial started training")
        server.stop()
        code, _, log = sweep.finish()
        last = log.strip().splitlines()[-1]
        assert code == 1 and "MLflow unreachable" in last and "fmx sweep faults.yaml --resume" in last, log[-3000:]
        assert "Traceback" not in log
        server.start()
        resumed = run_fmx(["sweep", "faults.yaml", "--tracking-uri", server.uri, "--resume"], tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        _assert_all_finished(tmp_path, server.uri, ONE_SEED)
    finally:
        server.stop()


# A training of each path, smaller and quicker: for what needs a finished sweep rather than one to interrupt.
SMALL_SWEEP = (
    ONE_SEED_SWEEP.replace("checkerboard", "moons")
    .replace("hidden: 64, depth: 3", "hidden: 16, depth: 2")
    .replace("batch_size: 256, checkpoint_every: 100", "batch_size: 64, checkpoint_every: 500")
    .replace("samples: 200, likelihood_points: 20", "samples: 100, likelihood_points: 10")
    + "max_concurrent_trials: 1  # see tests/conftest.py: ONE_TRIAL_AT_A_TIME\n"
)


def test_resume_against_a_lost_or_replaced_store_refuses_or_restores_every_row(tmp_path: Path):
    (tmp_path / "faults.yaml").write_text(SMALL_SWEEP)
    db = tmp_path / "mlflow.db"
    first = run_fmx(["sweep", "faults.yaml"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _rows(tmp_path)
    (tmp_path / "results" / "faults" / "runs.parquet").touch()
    stamp = (tmp_path / "results" / "faults" / "runs.parquet").stat().st_mtime_ns

    db.rename(tmp_path / "lost.db")
    gone = run_fmx(["sweep", "faults.yaml", "--resume"], tmp_path)
    assert gone.returncode == 2 and "is gone" in gone.stderr and "Traceback" not in gone.stderr, gone.stderr
    assert not db.exists()  # not re-created empty

    def new_store(name: str, *experiments: str) -> Path:
        path = tmp_path / name
        client = MlflowClient(tracking_uri=f"sqlite:///{path}")
        for experiment in experiments:
            client.create_experiment(experiment, artifact_location=str(tmp_path / "artifacts"))
        return path

    # A new store where the sweep's experiment has another id.
    shutil.copy(new_store("replaced.db", "something else", "faults"), db)
    replaced = run_fmx(["sweep", "faults.yaml", "--resume"], tmp_path)
    assert replaced.returncode == 2 and "no longer holds experiment 'faults'" in replaced.stderr, replaced.stderr
    shrunk = run_fmx(["tables", "faults"], tmp_path)  # the store's experiment has no rows: tables say so
    assert shrunk.returncode == 1 and f"holds {len(before)} rows but the MLflow store now gives 0" in shrunk.stderr
    assert "--allow-fewer" in shrunk.stderr and "Traceback" not in shrunk.stderr
    assert (tmp_path / "results" / "faults" / "runs.parquet").stat().st_mtime_ns == stamp

    # A new store in which the experiment has its old id but no runs: the rows come back from the checkpoints.
    shutil.copy(new_store("fresh.db", "faults"), db)
    restored = run_fmx(["sweep", "faults.yaml", "--resume"], tmp_path)
    assert restored.returncode == 0, restored.stderr[-3000:]
    after = _rows(tmp_path)
    assert len(after) == len(before) and (after["status"] == "ok").all()
    columns = ["trial_id", "train_step", "solver", "nfe", "nll", "sample_metric"]
    pd.testing.assert_frame_equal(after[columns], before[columns])


def test_tables_are_never_replaced_by_fewer_rows_unsaid(tmp_path: Path):
    from types import SimpleNamespace

    from fm_core.solvers import SolverSetting
    from orchestrator.rows import EvalRow
    from orchestrator.tables import FewerRowsError, evaluation_rows, rows_frame, write_tables

    def rows(n: int) -> pd.DataFrame:
        content = {
            "summary": {"sweep": "s", "trial_id": "ot-fm-independent-s0", "path": "ot", "objective": "fm",
                        "coupling": "independent", "seed": 0, "dataset": "moons"},
            "rows": [EvalRow.of(SolverSetting("euler", nfe_budget=4 + i), 10, nfe=4 + i, nll=1.0).as_dict() for i in range(n)],
        }  # fmt: skip
        return rows_frame(evaluation_rows([(SimpleNamespace(info=SimpleNamespace(run_id="r"), data=SimpleNamespace(tags={})), content)]))

    runs_path, _ = write_tables(rows(4), tmp_path)
    with pytest.raises(FewerRowsError, match="holds 4 rows but the MLflow store now gives 2"):
        write_tables(rows(2), tmp_path)
    assert len(pd.read_parquet(runs_path)) == 4 and not list(tmp_path.glob("*.tmp"))
    write_tables(rows(2), tmp_path, allow_fewer=True)  # when asked for
    assert len(pd.read_parquet(runs_path)) == 2


def test_a_full_disk_ends_the_sweep_with_one_line_and_resume_finishes_once_space_is_freed(
    tmp_path: Path, small_disk: Path
):
    (small_disk / "faults.yaml").write_text(ONE_AT_A_TIME)
    uri = f"sqlite:///{small_disk / 'mlflow.db'}"
    # Full before it starts: the first write (the sweep's lock) fails in write(), whose error names no path.
    filler = _fill(small_disk)
    early = run_fmx(["sweep", "faults.yaml"], small_disk)
    assert early.returncode == 1 and "Traceback" not in early.stderr, early.stderr[-3000:]
    assert early.stderr.strip().splitlines()[-1] == f"error: no space left on device ({small_disk / 'results' / 'faults'})"
    filler.unlink()

    sweep = Sweep(small_disk, ["faults.yaml"], log_dir=tmp_path)
    sweep.wait_for(lambda text: f"step 200/{STEPS}" in text, "a trial reached step 200")
    filler = _fill(small_disk)
    code, stdout, log = sweep.finish()
    assert code == 1, log[-3000:]
    last = log.strip().splitlines()[-1]
    assert last.startswith("error: no space left on device (") and str(small_disk) in last, last
    assert "--resume" in last
    assert not list(small_disk.rglob("*.parquet.tmp"))

    filler.unlink()
    resumed = run_fmx(["sweep", "faults.yaml", "--resume"], small_disk)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_all_finished(small_disk, uri, ONE_SEED)


def test_two_sweeps_of_one_file_started_at_once_on_a_fresh_folder_one_runs_one_is_refused(tmp_path: Path):
    """Once, one of them died in MLflow's schema migration and, on an existing store, both computed everything
    into the same runs."""
    (tmp_path / "faults.yaml").write_text(SMALL_SWEEP.replace("[[ot, fm], [vp, fm]], seed: [0]", "[[ot, fm]], seed: [0]"))
    first = Sweep(tmp_path, ["faults.yaml"], log_dir=tmp_path / "a")
    second = Sweep(tmp_path, ["faults.yaml"], log_dir=tmp_path / "b")
    (code_a, _, log_a), (code_b, _, log_b) = first.finish(), second.finish()
    assert sorted([code_a, code_b]) == [0, 2], (log_a[-2000:], log_b[-2000:])
    refused = log_a if code_a == 2 else log_b
    assert "already running" in refused and "Traceback" not in refused, refused
    runs = _rows(tmp_path)
    assert len(runs) == 1 and (runs["status"] == "ok").all()
    (run,) = _mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "faults").values()
    history = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(run.info.run_id, "train_loss")
    assert len(history) == STEPS // 50  # computed and logged once


def test_a_full_storage_path_is_named_as_the_full_disk_not_taken_for_an_interruption(tmp_path: Path, small_disk: Path):
    """Tune stops its trials when it cannot write its state on a full storage_path: the driver checked only the
    results folder and the store, so a full storage read as an interruption (exit 130, --resume)."""
    from orchestrator.disk import as_disk_full, full_disk_under

    results, store = tmp_path / "results", f"sqlite:///{tmp_path / 'mlflow.db'}"
    results.mkdir()
    assert full_disk_under(results, store, small_disk) is None
    filler = _fill(small_disk)
    full = full_disk_under(results, store, small_disk)
    assert full is not None and str(small_disk) in str(full) and str(full).startswith("no space left on device")
    assert full_disk_under(results, store) is None  # the check before: blind to the storage
    # An error that names no path (sqlite's, a write() on an open file) names the fullest place it may be.
    for err in (OSError(errno.ENOSPC, "No space left on device"), RuntimeError("database or disk is full")):
        named = as_disk_full(err, places=[results, small_disk])
        assert named is not None and named.where == str(small_disk), named
        assert as_disk_full(err).where == str(Path.cwd())  # never "(unknown path)"
    filler.unlink()


def test_a_trial_run_that_lost_its_store_waits_out_one_retry_budget_not_one_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """Each MLflow call of a trial waited out the whole retry budget on its own: with the server gone, the
    calls after the first that gave up waited it out again (a 3 s budget took a trial 15 s to end; the default
    is 600 s). After one gives up, the next try once; one that gets through restores the wait."""
    from orchestrator.plan import TrainingKey
    from orchestrator.mlflow_retry import RETRY_SECONDS_ENV, TrackingUnavailable
    from orchestrator.tracking import TrialRun

    monkeypatch.setenv(RETRY_SECONDS_ENV, "2")
    server = MlflowServer(tmp_path)
    server.start()
    try:
        experiment = MlflowClient(tracking_uri=server.uri).create_experiment("lost")
        run = TrialRun(server.uri, experiment, "lost", TrainingKey("ot", "fm", "independent", 0), {"a": 1}, "cell")
        server.stop()
        capsys.readouterr()
        for step in range(3):
            with pytest.raises(TrackingUnavailable):
                run.log_metrics({"x": 1.0}, step)
            waits = capsys.readouterr().err.count("retrying in")
            assert waits >= 1 if step == 0 else waits == 0, (step, waits)
        server.start()
        run.log_metrics({"x": 2.0}, 5)  # the store is back: the one try gets through
        server.stop()
        with pytest.raises(TrackingUnavailable):
            run.log_metrics({"x": 3.0}, 6)
        assert capsys.readouterr().err.count("retrying in") >= 1  # and the next outage is waited out again
    finally:
        server.stop()
