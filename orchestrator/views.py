"""The sweep's comparison view in the MLflow UI: evaluations side by side, sorted by NFE, with a
parallel-coordinates chart over method x solver setting -> NFE, likelihood and sample quality.

MLflow 3's runs page reads a saved view from the experiment tag `mlflow.sharedViewState.<key>` when opened
as `#/experiments/<id>/runs?viewStateShareKey=<key>` (the UI's "Share" button writes the same tag). The
columns, the filter, the order and the charts come from the evaluation row's own fields (orchestrator.rows),
so a new param or metric shows up here without being spelled again. No MLflow import at module level.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from orchestrator.rows import FIELDS, SETTING_PARAM, EvalRow

VIEW_KEY = "fmx-comparison"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
#: Children only (training runs carry no evaluation tag), of the cells the sweep file asks for now.
EVALUATIONS_FILTER = "tags.`fmx.evaluation` != '' and tags.`fmx.current` = 'true'"
CHART_AXES = ("path", "objective", "coupling", "train_axes", SETTING_PARAM)  # the parallel plot's parameter axes
LEAD_PARAMS = ("path", "objective", "coupling", "solver", "tol", "nfe_budget")  # left of the value metrics
PLOT_METRIC_LIMIT = 3  # nfe, the likelihood, the sample metric: more axes make the plot unreadable


def _column(kind: str, name: str) -> str:
    """The UI's column id: `params.`path``, `metrics.`nfe`` (backticks as in its search syntax)."""
    return f"{kind}.`{name}`"


def metric_names(rows: Iterable[EvalRow]) -> list[str]:
    """The child runs' metric names in a fixed order (value metrics first, timings last), from the rows."""
    seen: dict[str, None] = {}
    for row in rows:
        for name in row.child_metrics():
            seen.setdefault(name, None)
    last = ("ode_error", "nll_nfe", "eval_seconds")
    return [n for n in seen if n not in last] + [n for n in last if n in seen]


def param_names() -> list[str]:
    """Every child param, in the row's order (method, seed, setting)."""
    names = [f.name for f in FIELDS if f.metadata["mlflow"] == "param"]
    return names[: names.index("nfe_budget") + 1] + [SETTING_PARAM] + names[names.index("nfe_budget") + 1 :]


def varying_axes(rows: Iterable[EvalRow]) -> list[str]:
    """The chart's parameter axes that take more than one value in the sweep (a constant axis is a flat
    line that only narrows the others); `path` when none varies."""
    rows = list(rows)
    varying = [a for a in CHART_AXES if len({row.child_params()[a] for row in rows}) > 1]
    return varying or ["path"]


def comparison_view(metrics: list[str], axes: list[str]) -> dict[str, Any]:
    """The view's JSON: params then metrics as columns (in that order), evaluations only, fewest NFE first,
    one full-width parallel-coordinates chart over `axes` -> the value metrics (all runs) in its own section."""
    section = "fmx-comparison-section"
    values = [m for m in metrics if m not in ("ode_error", "nll_nfe", "eval_seconds")]
    # A sweep with training-option axes (grid.train) shows their values beside the method too.
    lead = [p for p in LEAD_PARAMS[:3]] + (["train_axes"] if "train_axes" in axes else []) + list(LEAD_PARAMS[3:])
    columns = (
        [_column("params", p) for p in lead] + [_column("metrics", m) for m in values]
        + [_column("params", p) for p in param_names() if p not in lead]
        + [_column("metrics", m) for m in metrics if m not in values]
    )  # fmt: skip
    chart = {
        "uuid": "fmx-parallel-coordinates", "type": "PARALLEL", "metricSectionId": section, "deleted": False,
        "isGenerated": False, "runsCountToCompare": 100, "showAllRuns": True,
        "selectedParams": axes, "selectedMetrics": values[:PLOT_METRIC_LIMIT],
    }  # fmt: skip
    return {
        "searchFilter": EVALUATIONS_FILTER,
        "orderByKey": _column("metrics", "nfe") if "nfe" in metrics else "attributes.start_time",
        "orderByAsc": "nfe" in metrics,
        "selectedColumns": columns,
        "columnOrder": columns,
        "compareRunCharts": [chart],
        "compareRunSections": [
            {"uuid": section, "name": "fmx: method x solver setting", "display": True, "isReordered": False,
             "deleted": False, "isGenerated": False, "columns": 1, "cardHeight": 520},
        ],  # fmt: skip
        "runsHiddenMode": "SHOW_ALL",
    }


def save_comparison_view(uri: str, experiment_id: str, rows: Iterable[EvalRow]) -> None:
    """Write the view into the experiment (replacing an older one): `fmx ui` then opens the sweep on it."""
    from orchestrator.tracking import client

    rows = list(rows)
    view = comparison_view(metric_names(rows), varying_axes(rows))
    client(uri).set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(view))


def has_comparison_view(experiment: Any) -> bool:
    """Whether an MLflow Experiment carries the view (stores written before it existed do not)."""
    return VIEW_TAG in (experiment.tags or {})
