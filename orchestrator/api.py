"""fmx's Python API (a notebook, a script) and what the `fmx` command line calls:

    from orchestrator import run_sweep, load_results
    outcome = run_sweep("sweeps/smoke.yaml")          # SweepOutcome: rows, table paths, failures, exit code
    runs = load_results("smoke")                       # pandas DataFrame, one row per evaluation

A sweep that cannot run raises `SweepStopped` (its text is one line; `exit_code` 2 for bad input, 1 for a
store or disk that gave out, 130 for an interruption).

This module is the one place that loads fmx's stage modules on first use (`_stage`): they import Ray Tune,
PyTorch, pandas or matplotlib, seconds that `fmx validate`, `fmx --help` or a bad file's one-line refusal
must not pay; and Ray reads its local-cluster setting from the environment as it is imported.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rich.console import Console

from orchestrator.config_errors import ConfigError
from orchestrator.schema import SweepConfig
from orchestrator.validation import load_sweep
from orchestrator.errors import SweepInterrupted, SweepRefused, SweepStopped
from orchestrator.outcome import SweepOutcome
from orchestrator.planning import prepare
from orchestrator.preflight import is_local_ray
from orchestrator.tracking import resolve_tracking_uri

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SweepInterrupted", "SweepOutcome", "SweepRefused", "SweepStopped", "load_results", "run_sweep"]

#: The stage modules this API loads on first use (tests/test_architecture.py holds fmx to this list).
STAGES = ("orchestrator.pipeline", "orchestrator.publish", "orchestrator.results", "orchestrator.report_stage", "orchestrator.local_run")


def _stage(name: str) -> ModuleType:
    assert name in STAGES, name
    return importlib.import_module(name)


def run_sweep(
    sweep: str | Path | SweepConfig, tracking_uri: str | None = None, address: str | None = None,
    resume: bool = False, console: Console | None = None,
) -> SweepOutcome:  # fmt: skip
    """Run a sweep file (or a validated SweepConfig) on a local Ray (or the cluster at `address`, HOST:PORT),
    logging to `tracking_uri` (default: $MLFLOW_TRACKING_URI, else ./mlflow.db); only the cells the store
    does not hold yet train or evaluate. Progress goes to `console` (stderr by default). Where this process is
    connected to a Ray already (a notebook's own `ray.init()`), the sweep runs on that Ray and leaves it running.

    The pipeline's stages in order: read and validate the file, plan against the store (every check before
    Ray starts, the lock taken), then run, reconcile and publish (orchestrator.pipeline)."""
    try:
        config, file = (sweep, "<sweep>") if isinstance(sweep, SweepConfig) else (load_sweep(sweep), str(sweep))
    except ConfigError as err:
        raise SweepRefused(str(err)) from None
    if is_local_ray(address):
        # A local Ray serves this machine only: its GCS, raylet and agents then listen on 127.0.0.1 instead of
        # every interface. Ray reads this when it is imported, so before planning (Tune's state) imports it.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    planned = prepare(config, file, resolve_tracking_uri(tracking_uri), address, resume)
    return _stage("orchestrator.pipeline").run(planned, console)


def load_results(sweep: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """A sweep's evaluation rows (one per training x solver setting x step; the columns of `EvalRow`) as a
    pandas DataFrame, rebuilt from MLflow: `tracking_uri`, else $MLFLOW_TRACKING_URI, else ./mlflow.db."""
    return collect_runs(resolve_tracking_uri(tracking_uri), sweep)


def collect_runs(tracking_uri: str, sweep: str, publish_view: bool = False) -> pd.DataFrame:
    """The rows from MLflow alone (LookupError: no such sweep); `publish_view` rewrites the UI's view too."""
    return _stage("orchestrator.publish").collect_runs(tracking_uri, sweep, publish_view=publish_view)


def table_view(runs: pd.DataFrame, markdown: bool = False) -> tuple[Any, str]:
    """The sweep's summary as the paper lays it out: (a frame of display strings, or Markdown text; the legend)."""
    return _stage("orchestrator.results").table_view(runs, markdown)


def terminal_table(runs: pd.DataFrame, console: Console) -> Any:
    """The sweep's summary laid out for `console`'s width, no number split across lines (a rich renderable)."""
    return _stage("orchestrator.results").terminal_table(runs, console)


def rebuild_tables(tracking_uri: str, sweep: str, out_dir: Path, allow_fewer: bool = False) -> tuple[pd.DataFrame, Path, Path]:
    """runs.parquet and table.parquet rebuilt from MLflow alone (and the UI's view); FewerRowsError where that
    would drop rows unless `allow_fewer`."""
    return _stage("orchestrator.results").rebuild_tables(tracking_uri, sweep, out_dir, allow_fewer)


def compare(
    runs: pd.DataFrame, method_a: str, method_b: str, metric: str, margin: float | None = None
) -> tuple[list[Any], str, str]:
    """Two methods paired by seed in every evaluation cell both have: (cells, label of A, label of B); `margin`:
    also test equivalence within it (orchestrator.stats)."""
    return _stage("orchestrator.results").compare(runs, method_a, method_b, metric, margin)


def report(tracking_uri: str, sweep: str, runs: pd.DataFrame, out_dir: Path) -> Any:
    """`fmx report`: Markdown tables, plots and the paper's claims judged, written to `out_dir` and MLflow."""
    return _stage("orchestrator.report_stage").report(tracking_uri, sweep, runs, out_dir)


def local_run() -> Any:
    """One training or evaluation in this process, without Ray (`fmx train`, `fmx eval`; PyTorch)."""
    return _stage("orchestrator.local_run")
