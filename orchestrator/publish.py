"""The publish stage: a sweep's rows rebuilt from MLflow alone, written as runs.parquet and table.parquet, and
the experiment's comparison view in the MLflow UI. `fmx tables`, `compare`, `report` and `load_results`
read results the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console

from orchestrator.rows import EvalRow
from orchestrator.errors import FewerRowsError
from orchestrator.tables import RUNS_FILE, evaluation_rows, rows_frame, write_tables
from orchestrator.tracking import find_experiment, read_evaluations, resolve_tracking_uri
from orchestrator.views import save_comparison_view


def collect_rows(tracking_uri: str, sweep: str) -> tuple[str, list[EvalRow]]:
    """The sweep's experiment id and its evaluation rows, rebuilt from the MLflow experiment alone."""
    experiment_id = find_experiment(tracking_uri, sweep)
    if experiment_id is None:
        raise LookupError(f"no MLflow experiment named '{sweep}' at {tracking_uri}")
    return experiment_id, evaluation_rows(read_evaluations(tracking_uri, experiment_id))


def collect_runs(tracking_uri: str, sweep: str, publish_view: bool = False) -> pd.DataFrame:
    """runs.parquet's rows, rebuilt from the MLflow experiment alone; `publish_view` also (re)writes the
    experiment's comparison view in the MLflow UI from them (orchestrator.views)."""
    experiment_id, rows = collect_rows(tracking_uri, sweep)
    if publish_view:
        publish_comparison_view(tracking_uri, experiment_id, rows)
    return rows_frame(rows)


def publish_comparison_view(tracking_uri: str, experiment_id: str, rows: list[EvalRow]) -> None:
    """The view is a convenience of the UI: a store that refuses it (an outage at this moment) costs a warning,
    never the sweep's tables."""
    try:
        save_comparison_view(tracking_uri, experiment_id, rows)
    except Exception as err:  # noqa: BLE001 - MlflowException, OSError, sqlite errors: all only a warning here
        Console(stderr=True).print(f"[yellow]warning:[/] the MLflow comparison view was not saved: {err}", highlight=False)


@dataclass(frozen=True)
class Published:
    runs: pd.DataFrame
    runs_path: Path | None  # None where the tables were not written (see `not_written`)
    table_path: Path | None
    not_written: str | None  # why runs.parquet was left as it was


def publish(tracking_uri: str, sweep: str, results: Path, allow_fewer: bool, keep_existing: bool = False) -> Published:
    """Rows from MLflow, the comparison view, and both Parquet files (unless that would drop rows unsaid, or
    `keep_existing` and they exist: an interrupted pass leaves the tables of the last pass that ended, since
    what MLflow holds meanwhile is half of a pass)."""
    runs = collect_runs(tracking_uri, sweep, publish_view=True)
    if keep_existing and (results / RUNS_FILE).exists():
        return Published(runs, None, None, f"{results / RUNS_FILE} keeps the rows it had until the pass is resumed")
    try:
        runs_path, table_path = write_tables(runs, results, allow_fewer=allow_fewer)
    except FewerRowsError as err:
        return Published(runs, None, None, str(err))
    return Published(runs, runs_path, table_path, None)


def load_results(sweep: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """A sweep's evaluation rows (one per training x solver setting x step; the columns of `EvalRow`) as a
    pandas DataFrame, rebuilt from MLflow: `tracking_uri`, else $MLFLOW_TRACKING_URI, else ./mlflow.db."""
    return collect_runs(resolve_tracking_uri(tracking_uri), sweep)
