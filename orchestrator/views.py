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

from fm_core.solvers import SOLVER_FIELDS
from orchestrator.rows import FIELDS, SETTING_PARAM, SIDE_METRICS, EvalRow, is_result
from orchestrator.tags import TAG_CURRENT, TAG_EVALUATION
from orchestrator.tracking import client

VIEW_KEY = "fmx-comparison"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
#: Children only (training runs carry no evaluation tag), of the cells the sweep file asks for now.
EVALUATIONS_FILTER = f"tags.`{TAG_EVALUATION}` != '' and tags.`{TAG_CURRENT}` = 'true'"
#: What was trained, as child params: path, objective, coupling, train_axes (the training-option axes).
METHOD_PARAMS = tuple(f.name for f in FIELDS if f.metadata["role"] == "method" and f.metadata["mlflow"] == "param")
CHART_AXES = (*METHOD_PARAMS, SETTING_PARAM)  # the parallel plot's parameter axes
#: Left of the value metrics: the method (train_axes where it varies) and the solver's own setting fields.
LEAD_PARAMS = (*(p for p in METHOD_PARAMS if p != "train_axes"), *SOLVER_FIELDS)
PLOT_METRIC_LIMIT = 3  # nfe, the likelihood, the sample metric: more axes make the plot unreadable


def _column(kind: str, name: str) -> str:
    """The UI's column id: `params.`path``, `metrics.`nfe`` (backticks as in its search syntax)."""
    return f"{kind}.`{name}`"


def metric_names(rows: Iterable[EvalRow]) -> list[str]:
    """The child runs' metric names in a fixed order, from the rows: results (EvalRow's value fields but its
    checks) as first measured, then checks, protocol and timings (SIDE_METRICS) in the row's order."""
    seen: dict[str, bool] = {}  # name -> a result
    for row in rows:
        fields = row.metric_fields()
        for name in row.child_metrics():
            seen.setdefault(name, is_result(fields[name]))
    return [n for n, result in seen.items() if result] + [n for n in SIDE_METRICS if n in seen]


def param_names() -> list[str]:
    """Every child param, in the row's order (method, seed, setting), the setting's label after the solver's."""
    names = [f.name for f in FIELDS if f.metadata["mlflow"] == "param"]
    after = names.index(SOLVER_FIELDS[-1]) + 1
    return names[:after] + [SETTING_PARAM] + names[after:]


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
    values = [m for m in metrics if m not in SIDE_METRICS]
    # A sweep with training-option axes (grid.train) shows their values beside the method too.
    method = [p for p in METHOD_PARAMS if p != "train_axes" or p in axes]
    lead = method + [p for p in LEAD_PARAMS if p not in method]
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
    rows = list(rows)
    view = comparison_view(metric_names(rows), varying_axes(rows))
    client(uri).set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(view))

