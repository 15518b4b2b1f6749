"""What a trial sends to MLflow while it trains, off the training thread: metric points every
`train.log_every` steps, each evaluation's sample artifacts and child runs as soon as they exist, and MLflow's
own system metrics (CPU, memory, GPU where it can read them).

The training thread only appends to a queue; one writer thread sends batches every `flush_seconds`, with the
retries of `TrialRun.retrying`. An MLflow outage therefore stalls the writer, never training, and nothing is
lost to it: the checkpoint keeps the loss curve and the rows, and the trial's end logs them again (the same
metric point logged twice is one point: `TrialRun` stamps it from the run's start and its step).
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.evaluation_runs import log_evaluation_runs

if TYPE_CHECKING:
    from orchestrator.rows import EvalRow
    from orchestrator.tracking import TrialRun

#: Seconds between two sends of the queued points: a few requests a minute, whatever log_every is
#: (FMX_LIVE_FLUSH_SECONDS overrides it: tests watch a run fill up within seconds).
FLUSH_SECONDS = float(os.environ.get("FMX_LIVE_FLUSH_SECONDS", "5"))
#: Seconds between two samples of MLflow's system metrics (FMX_SYSTEM_METRICS_SECONDS overrides it).
SYSTEM_METRICS_SECONDS = float(os.environ.get("FMX_SYSTEM_METRICS_SECONDS", "10"))
_STOP = object()  # the last job: send what is left, then end the writer


class LiveLogger:
    """The trial's writer thread. `close()` sends what is queued (waiting at most `close_timeout` seconds)."""

    def __init__(self, run: TrialRun, flush_seconds: float = FLUSH_SECONDS, system_metrics: bool = True) -> None:
        self.run = run
        self.flush_seconds = flush_seconds
        self.uploaded: set[str] = set()  # artifact files sent (names relative to their artifact path)
        self.failures: list[str] = []
        self._jobs: queue.Queue[Any] = queue.Queue()  # callables to run, then _STOP
        self._points: list[tuple[str, float, int]] = []
        self._points_lock = threading.Lock()
        self._staging = Path(tempfile.mkdtemp(prefix="fmx-live-"))
        self._thread = threading.Thread(target=self._work, name="fmx-live-logger", daemon=True)
        self._thread.start()
        self._system = _start_system_metrics(run) if system_metrics else None

    # --- called from the training thread: never blocks on MLflow ---------------------------------------

    def log_point(self, step: int, values: dict[str, float]) -> None:
        with self._points_lock:
            self._points += [(name, value, step) for name, value in values.items()]

    def log_files(self, files: list[Path], artifact_path: str) -> None:
        """Copied now (the caller may delete or overwrite them), sent by the writer."""
        staged = []
        for file in files:
            target = self._staging / artifact_path / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)
            staged.append(target)
        self._jobs.put(lambda: self._send_files(staged, artifact_path))

    def log_rows(self, rows: list[EvalRow]) -> None:
        """Each evaluation's child run, created as soon as it is measured (found again later: never doubled)."""
        chosen = list(rows)
        self._jobs.put(lambda: log_evaluation_runs(self.run, chosen))

    def close(self, close_timeout: float = 120.0) -> None:
        if self._system is not None:
            try:
                self._system.finish()
            except Exception as err:  # noqa: BLE001 - system metrics are a convenience
                self.failures.append(f"system metrics: {err}")
        self._jobs.put(_STOP)
        self._thread.join(close_timeout)
        shutil.rmtree(self._staging, ignore_errors=True)

    # --- the writer thread -----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self.flush_seconds)
            except queue.Empty:  # nothing but the points is due
                job = None
            self._run(self._send_points)
            if job is _STOP:
                return
            if job is not None:
                self._run(job)

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as err:  # noqa: BLE001 - logged again at the trial's end; say it once here
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            self.failures.append(reason)
            if len(self.failures) == 1:
                print(f"fmx: live MLflow logging failed ({reason}); the trial's end logs it again", file=sys.stderr)

    def _send_points(self) -> None:
        with self._points_lock:
            points, self._points = self._points, []
        if points:
            self.run.log_points(points)

    def _send_files(self, files: list[Path], artifact_path: str) -> None:
        for file in files:
            self.run.log_artifact(file, artifact_path)
            self.uploaded.add(f"{artifact_path}/{file.name}")


def _start_system_metrics(run: TrialRun) -> Any:
    """MLflow's own monitor (psutil; GPUs through pynvml where installed), continuing a resumed run's steps."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run.run_id, sampling_interval=SYSTEM_METRICS_SECONDS, resume_logging=True,
                                       tracking_uri=run.uri)  # fmt: skip
        monitor.start()
        return monitor
    except Exception as err:  # noqa: BLE001 - e.g. psutil missing on a worker image
        print(f"fmx: MLflow system metrics are off ({type(err).__name__}: {err})", file=sys.stderr)
        return None
