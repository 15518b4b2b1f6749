"""The sweep's comparison view in the MLflow UI: evaluations grouped by method x solver setting (MLflow's own
grouping, each group's mean over seeds), the method's label, setting, NFE, likelihood and sample metric as the
first columns, a bar chart of each value by group.

MLflow 3's runs page reads a saved view from the experiment tag `mlflow.sharedViewState.<key>` when opened
as `#/experiments/<id>/runs?viewStateShareKey=<key>` (the UI's "Share" button writes the same tag); its keys
(groupBy, selectedColumns, compareRunCharts, ...) are those of the UI's own state in MLflow 3.17's bundle.
The experiment also declares itself a model-training one (TAG_EXPERIMENT_KIND), not a GenAI one. The
columns, the filter, the order and the charts come from the evaluation row's own fields (orchestrator.rows),
so a new param or metric shows up here without being spelled again. No MLflow import at module level.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from fm_core.solvers import SOLVER_FIELDS
from orchestrator.rows import FIELDS, METHOD_PARAM, SETTING_PARAM, SIDE_METRICS, EvalRow, is_result
from orchestrator.tags import TAG_CURRENT, TAG_EVALUATION, TAG_EXPERIMENT_KIND
from orchestrator.tracking import client

VIEW_KEY = "fmx-comparison"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
#: Children only (training runs carry no evaluation tag), of the cells the sweep file asks for now.
EVALUATIONS_FILTER = f"tags.`{TAG_EVALUATION}` != '' and tags.`{TAG_CURRENT}` = 'true'"
#: The experiment kind (TAG_EXPERIMENT_KIND) of a model-training experiment. MLflow 3.17's UI takes its mode
#: (sidebar: Runs, Models; or GenAI's Traces, Judges, Prompts) from the address's `workflowType` first, then
#: from the browser's last choice, GenAI by default: `fmx ui`'s addresses carry WORKFLOW_QUERY.
MODEL_TRAINING_KIND = "custom_model_development"
WORKFLOW_QUERY = "workflowType=machine_learning"
GROUP_PARAMS = (METHOD_PARAM, SETTING_PARAM)  # what a row of the view is: the method's label says it all
#: MLflow groups the evaluations by these params (every seed of a method x setting in one row) and shows each
#: group's mean ("average"; "min" and "max" are its other choices, one at a time).
GROUP_BY = {"aggregateFunction": "average", "groupByKeys": [{"mode": "param", "groupByData": p} for p in GROUP_PARAMS]}
PLOT_METRIC_LIMIT = 3  # nfe, the likelihood, the sample metric
#: One chart a row, 420 px tall: MLflow's bar chart names its bars only in a legend under it, and at three charts
#: a row (1600 px window, assistant panel open) each entry was cut to "method: SM-VP, setting: …"; one a row
#: shows "method: SM-VP, setting: euler_nfe8" whole.
CHART_COLUMNS, CHART_HEIGHT = 1, 420


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
    """Every child param, in the row's order (method label, method, seed, setting), the setting's label after
    the solver's."""
    names = [f.name for f in FIELDS if f.metadata["mlflow"] == "param"]
    after = names.index(SOLVER_FIELDS[-1]) + 1
    return [METHOD_PARAM] + names[:after] + [SETTING_PARAM] + names[after:]


def comparison_view(metrics: list[str]) -> dict[str, Any]:
    """The view's JSON: groups of method x setting (their mean), the method's label, the setting and the value
    metrics as the first columns (on screen at 1600 px with MLflow's assistant panel open), the other params
    and metrics after; evaluations only, ordered by method; a bar chart of each value by group (MLflow's
    parallel-coordinates plot draws no group: it stayed empty and hidden under this grouping)."""
    section = "fmx-comparison-section"
    values = [m for m in metrics if m not in SIDE_METRICS]
    lead = [_column("params", p) for p in GROUP_PARAMS] + [_column("metrics", m) for m in values]
    rest = [_column("params", p) for p in param_names()] + [_column("metrics", m) for m in metrics]
    columns = lead + [c for c in rest if c not in lead]
    common = {"metricSectionId": section, "deleted": False, "isGenerated": False, "runsCountToCompare": 100}
    bars = [{**common, "uuid": f"fmx-bar-{m}", "type": "BAR", "metricKey": m} for m in values[:PLOT_METRIC_LIMIT]]
    return {
        "searchFilter": EVALUATIONS_FILTER,
        "orderByKey": _column("params", METHOD_PARAM),
        "orderByAsc": True,
        "selectedColumns": columns,
        "columnOrder": columns,
        "groupBy": GROUP_BY,
        "groupsExpanded": {},
        "useGroupedValuesInCharts": True,
        "compareRunCharts": bars,
        "compareRunSections": [
            {"uuid": section, "name": "fmx: method x solver setting (mean over seeds)", "display": True,
             "isReordered": False, "deleted": False, "isGenerated": False, "columns": CHART_COLUMNS,
             "cardHeight": CHART_HEIGHT},
        ],  # fmt: skip
        "runsHiddenMode": "SHOW_ALL",
    }


def save_comparison_view(uri: str, experiment_id: str, rows: Iterable[EvalRow]) -> None:
    """Write the view into the experiment (replacing an older one) and declare the experiment a model-training
    one: `fmx ui` then opens the sweep on it."""
    rows = list(rows)
    view = comparison_view(metric_names(rows))
    store = client(uri)
    store.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(view))
    store.set_experiment_tag(experiment_id, TAG_EXPERIMENT_KIND, MODEL_TRAINING_KIND)

