"""Launch a light MLflow UI for a sweep store and find the URL of a sweep's runs page.

`mlflow ui` by default starts 4 workers plus job runners (16 processes, ~2.6-3.2 GB, 15-66 s before it
answers here); one worker with job execution off answers in seconds with 2 processes. Nothing here imports
MLflow at module import time: `fmx` stays fast on its other paths.

Stopping: the server runs in a session of its own, so a terminal's Ctrl-C or hang-up reaches `fmx ui` alone,
which stops the server once (`stop_server`). Signalling the server's whole group instead gives its uvicorn worker
the signal twice (directly, and forwarded by `mlflow server`): a forced exit with a 40-line traceback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

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


def start_server(tracking_uri: str, host: str, port: int, log: Path | None = None) -> subprocess.Popen:
    """Start the server in a session (and process group) of its own, stopped by `stop_server`; its output goes
    to `log`, or to a pipe that an `OutputRelay` reads."""
    out = open(log, "a") if log else subprocess.PIPE  # noqa: SIM115 - the child keeps the file
    return subprocess.Popen(server_command(tracking_uri, host, port), env=server_env(), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True, text=True)  # fmt: skip


class OutputRelay:
    """Copies the server's output to `sink` line by line, from a thread; once muted, its lines (uvicorn's
    shutdown chatter after a stop signal) are read and dropped, so the server never blocks on a full pipe."""

    def __init__(self, process: subprocess.Popen, sink: TextIO) -> None:
        self._muted = threading.Event()
        self._thread = threading.Thread(target=self._copy, args=(process.stdout, sink), name="fmx-ui-output", daemon=True)
        self._thread.start()

    def _copy(self, stream: TextIO, sink: TextIO) -> None:
        for line in stream:
            if not self._muted.is_set():
                sink.write(line)
                sink.flush()

    def mute(self) -> None:
        self._muted.set()

    def drain(self, timeout: float = 2.0) -> None:
        """Wait (a bounded time) for the output of a server that has ended: why it ended is shown in full."""
        self._thread.join(timeout)


#: The signals that end `fmx ui`: Ctrl-C, `kill`, a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """A stop signal reached the process; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, the first stop signal raises `Stopped` (in the main thread) and later ones are ignored,
    so the cleanup that follows is not cut short; the previous handlers are back afterwards."""

    def handler(signum: int, _frame: object) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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


def stop_server(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the server (`mlflow server` forwards it once to its uvicorn worker, which closes the port and
    exits), then SIGKILL whatever is left of its process group after `grace` seconds or once the server is gone
    (a worker it left behind would hold the port)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is empty: the usual end
        pass
    process.wait()


def port_problem(port: int, host: str = "127.0.0.1") -> str | None:
    """Why the UI cannot listen on `host`:`port`, found by binding it (as the server would) and letting go."""
    if not 1 <= port <= 65535:
        return f"{port} is not a TCP port (1 to 65535)"
    if port_in_use(host, port):
        return f"port {port} on {host} is in use; pass another --port"
    return None


def serve(uri: str, host: str, port: int, exp_id: str | None, announce: Callable[[str], None]) -> tuple[int, bool]:
    """Run the server until it exits or a stop signal (Ctrl-C, SIGTERM, SIGHUP); `announce` the URL only once it
    answers. (exit code, whether it ever served); an exit without serving is a failure even with code 0.
    A signal stops the server and its worker, frees the port and raises Stopped."""
    address = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    process = relay = stopped = None
    with stop_signals_raise():
        try:
            process = start_server(uri, host, port)
            relay = OutputRelay(process, sys.stderr)
            served = wait_until_served(address, process)
            if served:
                if exp_id:
                    announce(f"MLflow UI: {runs_page_url(address, exp_id)}  (store: {uri}; Ctrl-C to stop)")
                    announce(f"charts: {runs_page_url(address, exp_id, charts=True)}")
                else:
                    announce(f"MLflow UI: {address}  (store: {uri}; Ctrl-C to stop)")
            code = process.wait()
        except Stopped as stop:
            stopped = stop
        finally:
            if relay is not None and stopped:  # after a signal, fmx's one line says it all
                relay.mute()
            elif relay is not None:  # the server ended on its own: its last words say why
                relay.drain()
            if process is not None:  # also a server that ended on its own: a worker it left would hold the port
                stop_server(process)
    if stopped:
        raise stopped
    return (code or (0 if served else 1)), served
