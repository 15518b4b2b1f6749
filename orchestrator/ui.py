"""Launch a light MLflow UI for a sweep store and find the URL of a sweep's runs page.

`mlflow ui` by default starts 4 workers plus job runners (16 processes, ~2.6-3.2 GB, 15-66 s before it
answers here); one worker with job execution off answers in seconds with 2 processes. Nothing here imports
MLflow at module import time: `fmx` stays fast on its other paths.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from orchestrator.store_check import sqlite_path
from orchestrator.views import VIEW_KEY, WORKFLOW_QUERY

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def server_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """`mlflow server` with one worker, serving the store's artifacts (the runs' plots) through the server."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port), "--workers", "1"]  # fmt: skip
    db = sqlite_path(tracking_uri)
    if db:  # fmx's experiments name their own artifact folders; one made in the UI gets mlruns/ beside the store
        cmd += ["--default-artifact-root", str(db.resolve().parent / "mlruns")]
    return cmd


def server_env() -> dict[str, str]:
    """The environment of the server: job execution off (no job runner processes, ~2.5 GB less)."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def port_in_use(host: str, port: int) -> bool:
    """Whether `host:port` cannot be bound (as the server would bind it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def start_server(tracking_uri: str, host: str, port: int, log: Path | None = None, own_session: bool = False) -> subprocess.Popen:
    """Start the server; in the caller's process group by default, so that Ctrl-C in a terminal reaches it and
    its worker too; `own_session` (a script's server): stopped as one process group by `stop_server`."""
    out = open(log, "a") if log else None  # noqa: SIM115 - the child keeps the file
    return subprocess.Popen(server_command(tracking_uri, host, port), env=server_env(), stdout=out,
                            stderr=subprocess.STDOUT if out else None, start_new_session=own_session)  # fmt: skip


def wait_until_served(address: str, process: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll /health until it answers 200 (True), the server exits or `timeout` passes (False): the URL is
    printed only once it answers, not when the server was merely started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def experiment_id(tracking_uri: str, name: str) -> str | None:
    """The id of the experiment named after the sweep, or None when the store has none by that name."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(name)
    return found.experiment_id if found else None


def runs_page_url(address: str, exp_id: str, charts: bool = False) -> str:
    """The experiment's runs table opened on fmx's comparison view (orchestrator.views), or its chart tab
    with its bar charts of each value by method x setting (`charts`). MLflow 3 opens `#/experiments/<id>` on its GenAI traces
    tab for some experiments; `/runs` is the route of the runs table (found in the UI bundle's routes), and
    `workflowType` opens it in MLflow's model-training mode."""
    page = f"{address}/#/experiments/{exp_id}/runs?viewStateShareKey={VIEW_KEY}&{WORKFLOW_QUERY}"
    return page + ("&compareRunsMode=CHART" if charts else "")


def stop_server(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGINT the process group of a server started with `own_session`, then SIGKILL it if it lingers."""
    import signal

    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
