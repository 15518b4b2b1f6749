"""Run the installed `fmx` console script as a user would, in a folder of the test's own."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

FMX = str(Path(sys.executable).with_name("fmx"))
REPO = Path(__file__).resolve().parent.parent
#: Where the tests' runs keep fmx's cache (the digits classifier is trained once, in the checkout, git-ignored).
FMX_CACHE = str(REPO / ".fmx_cache")
#: An MLflow filter for the training (parent) runs of a sweep, leaving out its evaluation (child) runs.
TRAINING_RUNS = "tags.`fmx.trial_id` != ''"


def fmx_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment: no inherited tracking URI, Ray's files in a short private temp dir, and this
    checkout's code first on the path (the `fmx` script may be another checkout's editable install)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="fmxray", dir="/tmp")  # Ray's socket paths must stay short
    env["FMX_CACHE_DIR"] = FMX_CACHE
    env.update(extra or {})
    return env


def run_fmx(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    own_env = env is None
    env = env or fmx_env()
    try:
        return subprocess.run([FMX, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        if own_env:
            cleanup_ray_tmp(env)


def kill_session(session_id: int) -> None:
    """SIGKILL every process of a session (a driver started with start_new_session=True and the local Ray it
    started: Ray's workers set their own process group, so killpg alone leaves them running and using CPU)."""
    import psutil

    victims = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == session_id:
                proc.kill()
                victims.append(proc)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    psutil.wait_procs(victims, timeout=10)


def leftover_ray_processes(env: dict[str, str], grace: float = 5.0) -> list[str]:
    """Processes of the command's local Ray still alive `grace` seconds after it returned: found by the Ray
    temp dir in their command line (raylet, GCS, monitors) or in their environment (workers and agents
    rename themselves with setproctitle, but inherit RAY_TMPDIR)."""
    import psutil

    marker = env["RAY_TMPDIR"]
    deadline = time.monotonic() + grace
    while True:
        left = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            try:
                inherited = proc.environ().get("RAY_TMPDIR") == marker
            except (psutil.Error, OSError):
                inherited = False
            if marker in cmdline or inherited:
                left.append(cmdline[:200])
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def cleanup_ray_tmp(env: dict[str, str]) -> None:
    shutil.rmtree(env.get("RAY_TMPDIR", ""), ignore_errors=True)


def fmx_in_this_process(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """`fmx ARGS` run by the test's own process (typer's CliRunner) in `cwd`, with the environment `run_fmx`
    gives the console script (`env`, or fmx_env()): the same exit code, stdout and stderr.

    For commands that end before Ray starts (bad input, damaged records, read-only commands): there a new
    interpreter's imports (about 1 s; 3-4 s where the command reads the MLflow store) were most of the test's
    CPU, on a machine where the suite is CPU-bound. `tests/test_cli_bad_input.py` still runs a case through
    the console script to show that a process ends the same way. An exception the CLI did not turn into its
    message is shown on stderr as the traceback a user would see, so "Traceback" checks still catch it.
    `timeout` is accepted for run_fmx's signature and not enforced (these commands never wait)."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    wanted = env or fmx_env()
    overrides: dict[str, str | None] = {k: None for k in os.environ if k not in wanted}
    overrides.update({k: v for k, v in wanted.items() if os.environ.get(k) != v})
    try:
        with contextlib.chdir(cwd):
            result = CliRunner().invoke(app, args, env=overrides, prog_name="fmx")
    finally:
        if env is None:
            cleanup_ray_tmp(wanted)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess([FMX, *args], result.exit_code, result.stdout, stderr)
