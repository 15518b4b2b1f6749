"""fmx from Python (a notebook, a script), and what the `fmx` command line calls:

    from orchestrator import run_sweep, load_results
    outcome = run_sweep("sweeps/smoke.yaml")          # SweepOutcome: rows, table paths, failures, exit code
    runs = load_results("smoke")                       # pandas DataFrame, one row per evaluation

A sweep that cannot run raises `SweepStopped` (its text is one line; `exit_code` 2 for bad input, 1 for a
store or disk that gave out, 130 for an interruption).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from rich.console import Console

from orchestrator.config import SweepConfig
from orchestrator.errors import SweepInterrupted, SweepRefused, SweepStopped
from orchestrator.outcome import SweepOutcome
from orchestrator.preflight import is_local_ray
from orchestrator.publish import load_results

__all__ = ["SweepInterrupted", "SweepOutcome", "SweepRefused", "SweepStopped", "load_results", "run_sweep"]


def run_sweep(
    sweep: str | Path | SweepConfig, tracking_uri: str | None = None, address: str | None = None,
    resume: bool = False, console: Console | None = None,
) -> SweepOutcome:  # fmt: skip
    """Run a sweep file (or a validated SweepConfig) on a local Ray (or the cluster at `address`, HOST:PORT),
    logging to `tracking_uri` (default: $MLFLOW_TRACKING_URI, else ./mlflow.db); only the cells the store
    does not hold yet train or evaluate. Progress goes to `console` (stderr by default)."""
    if is_local_ray(address):
        # A local Ray serves this machine only: its GCS, raylet and agents then listen on 127.0.0.1 instead of
        # every interface. Ray reads this when it is imported, so before the driver below imports it.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # The driver's stages import Ray Tune (seconds) and must see the setting above: they load on first use,
    # the one place fmx defers importing its own code (validation, --dry-run and the tables never need Ray).
    pipeline = importlib.import_module("orchestrator.pipeline")
    return pipeline.run(sweep, tracking_uri, address, resume, console)
