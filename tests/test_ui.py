"""`fmx ui`: a busy port or an unknown sweep end with exit 2 and one line; on a free port the light server
answers /health and the printed runs page within a bounded wait, and stopping it leaves no process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cli_helpers import FMX, fmx_env
from tests.mlflow_server import free_port


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("ui") / "mlflow.db"
    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("smoke", artifact_location=str(db.parent / "artifacts"))  # not ./mlruns of the checkout
    for i, solver in enumerate(["dopri5", "rk4"]):
        run = client.create_run(exp, run_name=f"ot-fm-independent-s{i}")
        for k, v in {"path": "ot", "objective": "fm", "solver": solver, "tol": 1e-5}.items():
            client.log_param(run.info.run_id, k, v)
        client.log_metric(run.info.run_id, "nfe", 20 + 60 * i)
        client.set_terminated(run.info.run_id)
    return uri


def test_busy_port_exits_2(store: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([FMX, "ui", "smoke", "--tracking-uri", store, "--port", str(port)], cwd=tmp_path,
                           env=fmx_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "in use" in r.stderr


def test_unknown_sweep_exits_2(store: str, tmp_path: Path) -> None:
    r = subprocess.run([FMX, "ui", "nope", "--tracking-uri", store, "--port", str(free_port())], cwd=tmp_path,
                       env=fmx_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr


def _session(sid: int) -> list:
    import psutil

    return [p for p in psutil.process_iter() if _sid(p.pid) == sid]


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def test_serves_runs_page_and_stops(store: str, tmp_path: Path) -> None:
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen([FMX, "ui", "smoke", "--tracking-uri", store, "--port", str(port)], cwd=tmp_path,
                            env=fmx_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        url = None
        while url is None and time.monotonic() - t0 < 40:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"MLflow UI: (\S+)", line)
            url = m.group(1) if m else None
        answered = time.monotonic() - t0
        assert url and url.startswith(f"http://127.0.0.1:{port}/#/experiments/"), url
        assert url.endswith("/runs?viewStateShareKey=fmx-comparison&workflowType=machine_learning"), url
        # The view the URL opens exists in the store (written by `fmx ui` for a store that had none).
        from mlflow.tracking import MlflowClient

        assert "mlflow.sharedViewState.fmx-comparison" in MlflowClient(tracking_uri=store).get_experiment_by_name("smoke").tags
        assert answered < 40
        for page in (f"http://127.0.0.1:{port}/health", url):
            with urllib.request.urlopen(page, timeout=5) as r:
                assert r.status == 200
        procs = _session(proc.pid)
        rss = sum(p.memory_info().rss for p in procs) / 2**20
        print(f"\nfmx ui answered after {answered:.1f} s; {len(procs)} processes; {rss:.0f} MiB RSS")
        assert len(procs) <= 4
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(1)
        left = _session(proc.pid)
        for p in left:
            p.kill()
    assert not left, [p.cmdline() for p in left]
