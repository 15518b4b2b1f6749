"""Every MLflow tag name fmx writes or searches by, in one torch-free, MLflow-free module that the tracking
code, the evaluation runs, the registry and the comparison view all import (none imports another for them).
"""

from __future__ import annotations

from typing import Any

# --- MLflow's own tags -----------------------------------------------------------------------------------
TAG_PARENT = "mlflow.parentRunId"  # MLflow's nesting tag: an evaluation's training run
TAG_RUN_NAME = "mlflow.runName"
TAG_NOTE = "mlflow.note.content"  # MLflow's description of an experiment or run
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"  # what MLflow's UI takes an experiment for (GenAI or model training)
# --- fmx's tags --------------------------------------------------------------------------------------------
TAG_SWEEP = "fmx.sweep"
TAG_TRIAL = "fmx.trial_id"
TAG_ERROR = "fmx.error"
TAG_NODE = "fmx.node_id"
TAG_INTERRUPTED = "fmx.interrupted"
TAG_CELL = "fmx.cell"  # the training's content key (orchestrator.cells): how a later pass finds it again
#: "true" on the runs of the cells and evaluations the sweep file asks for now, "false" on those an edit of
#: the file left out (kept in MLflow, out of the tables and of the comparison view).
TAG_CURRENT = "fmx.current"
TAG_EVALUATION = "fmx.evaluation"  # an evaluation run's row's evaluation_key, unique within its training run
TAG_OF_TRIAL = "fmx.of_trial"  # an evaluation run's trial id
TAG_REPORT = "fmx.report"  # "1" on the run `fmx report` logs to
#: On a training run: the trial id and grid.train values (`lr=0.002`) of the file that asks for its cell now: a
#: cell reused by an edited file (train.lr moved into grid.train) shows under the names that file gives it.
TAG_TRAIN_AXES = "fmx.train_axes"
TAG_FOLDER = "fmx.folder"  # on a sweep's experiment: `host:results folder` of the sweep folder that owns it


def search_all(mlflow_client: Any, experiment_id: str, filter_string: str, page: int = 1000) -> list[Any]:
    """Every run matching a (tag) filter, page by page (one search returns at most `page` runs)."""
    out: list[Any] = []
    token: str | None = None
    while True:
        found = mlflow_client.search_runs([experiment_id], filter_string=filter_string, max_results=page, page_token=token)
        out.extend(found)
        token = getattr(found, "token", None)
        if not token:
            return out
