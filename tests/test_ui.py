"""`fmx ui`: a busy port or an unknown sweep end with exit 2 and one line; on a free port the light server
answers /health and the printed runs page within a bounded wait, and SIGTERM, Ctrl-C or a hang-up stops it: no
process left, the port free, one line, exit 130."""

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

from orchestrator.ui import port_in_use
from tests.cli_helpers import FMX, fmx_env
from tests.cli_helpers import fmx_in_this_process as fmx_here
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
        r = fmx_here(["ui", "smoke", "--tracking-uri", store, "--port", str(port)], tmp_path)  # refused before serving
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "in use" in r.stderr


def test_unknown_sweep_exits_2(store: str, tmp_path: Path) -> None:
    r = fmx_here(["ui", "nope", "--tracking-uri", store, "--port", str(free_port())], tmp_path)  # refused before serving
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr


def _port_free_within(port: int, seconds: float) -> float | None:
    """Seconds until 127.0.0.1:`port` can be bound again (None: not within `seconds`)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if not port_in_use("127.0.0.1", port):
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def _alive(process) -> bool:
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


#: How each signal reaches `fmx ui`: `kill PID` (SIGTERM), a terminal's Ctrl-C or hang-up (its process group).
STOPS = [(signal.SIGTERM, os.kill), (signal.SIGINT, os.killpg), (signal.SIGHUP, os.killpg)]


@pytest.mark.parametrize(("sig", "send"), STOPS, ids=[s.name for s, _ in STOPS])
def test_serves_runs_page_and_stops(store: str, tmp_path: Path, sig: signal.Signals, send) -> None:
    """The runs page answers; then the signal stops the server and its worker: the port is free within 5 s,
    nothing it started is left, fmx says so in one line without a traceback and exits 130."""
    import psutil

    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen([FMX, "ui", "smoke", "--tracking-uri", store, "--port", str(port)], cwd=tmp_path,
                            env=fmx_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    started: list[psutil.Process] = []
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
        for page in (f"http://127.0.0.1:{port}/health", url):
            with urllib.request.urlopen(page, timeout=5) as r:
                assert r.status == 200
        started = psutil.Process(proc.pid).children(recursive=True)
        rss = sum(p.memory_info().rss for p in [psutil.Process(proc.pid), *started]) / 2**20
        print(f"\nfmx ui answered after {answered:.1f} s; {len(started) + 1} processes; {rss:.0f} MiB RSS")
        assert 1 <= len(started) <= 3
        send(proc.pid, sig)
        freed = _port_free_within(port, 5.0)
        print(f"{sig.name}: port free after {freed} s")
        assert freed is not None, f"port {port} still held 5 s after {sig.name}"
        _, stderr = proc.communicate(timeout=30)  # bounded: a server left behind would hold the pipe open
        code = proc.returncode
        assert code == 130, (code, stderr[-3000:])
        assert "Traceback" not in stderr, stderr[-3000:]
        after = stderr[stderr.rindex("Uvicorn running on") :].splitlines()[1:]  # what followed the signal
        assert [line for line in after if "GET /" not in line] == [f"{sig.name}: stopped the MLflow UI; port {port} on 127.0.0.1 is free"], after
        assert answered < 40
    finally:
        if proc.poll() is None:  # a failure before the signal: find what it started before ending it
            started = started or psutil.Process(proc.pid).children(recursive=True)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        left = [p for p in started if _alive(p)]
        for p in left:
            p.kill()
    assert not left, [p.cmdline() for p in left]
