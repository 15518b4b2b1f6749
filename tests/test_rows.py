"""The typed evaluation row: every output (Parquet, MLflow child runs, tables) derives from EvalRow."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from fm_core.solvers import SolverSetting
from orchestrator.compare import compare_methods
from orchestrator.rows import EvalRow, parquet_columns, parquet_dtypes
from orchestrator.tables import GROUP_COLUMNS, RUN_COLUMNS, VALUE_COLUMNS, rows_frame, summarize, to_markdown
from orchestrator.views import comparison_view, metric_names

SETTINGS = [SolverSetting("euler", nfe_budget=8), SolverSetting("dopri5", tol=1e-4), SolverSetting("dopri5", tol=1.4e-4)]


def _row(setting: SolverSetting, **values) -> EvalRow:
    base = {"trial_id": "vp-fm-independent-s0", "path": "vp", "objective": "fm", "coupling": "independent", "seed": 0}
    return EvalRow.of(setting, 100, **{**base, **values})


def test_every_child_run_carries_the_same_param_names_whatever_the_setting_or_outcome():
    rows = [_row(s) for s in SETTINGS] + [_row(SETTINGS[0], status="failed", error="boom"), _row(SETTINGS[1], dequant_draws=4)]
    names = {frozenset(r.child_params()) for r in rows}
    assert names == {frozenset({"method", "path", "objective", "coupling", "train_axes", "seed", "solver", "tol", "nfe_budget",
                                "cfg_scale", "setting", "train_step", "dequant_draws", "weights"})}  # fmt: skip
    assert rows[0].child_params()["tol"] == "none" and rows[0].child_params()["nfe_budget"] == "8"
    # The setting's one label, so that every evaluation has a value on one categorical axis.
    assert [r.child_params()["setting"] for r in rows[:3]] == [s.label for s in SETTINGS]
    # Tolerances read as their labels do, so 1e-4 and 1.4e-4 stay apart in filters and plots.
    assert [r.child_params()["tol"] for r in rows[1:3]] == ["1e-04", "1.4e-04"]


def test_evaluation_keys_tell_every_setting_step_and_dequantization_apart():
    rows = [_row(s, dequant_draws=k) for s in SETTINGS for k in (None, 1, 4)]
    rows += [r.replace(train_step=200) for r in rows]
    assert len({r.evaluation_key for r in rows}) == len(rows)


def test_child_metrics_are_named_by_what_they_measure_and_skip_what_was_not_measured():
    row = _row(SETTINGS[1], nfe=20, nll=3.14159265, nll_unit="bits/dim", nll_nfe=40, sample_metric=math.nan,
               sample_metric_name=None, ode_error=1.23456e-7, eval_seconds=0.5)  # fmt: skip
    assert row.child_metrics() == {"nfe": 20.0, "bits_per_dim": 3.142, "nll_nfe": 40.0, "ode_error": 1.235e-07, "eval_seconds": 0.5}


def test_parquet_columns_and_dtypes_come_from_the_row_and_read_back_older_rows():
    assert RUN_COLUMNS == parquet_columns() and set(parquet_dtypes()) == set(RUN_COLUMNS)
    assert set(GROUP_COLUMNS) >= {"path", "objective", "coupling", "solver", "tol", "nfe_budget", "train_step"}
    assert "seed" not in GROUP_COLUMNS and set(VALUE_COLUMNS) == {
        "nfe", "nll", "sample_metric", "fid", "straightness", "path_energy", "nfe_sample_mean", "nfe_sample_median",
        "nfe_sample_p90", "per_sample_gap", "ode_error"}  # fmt: skip
    legacy = {"train_step": 5, "solver": "euler", "tol": None, "nfe_budget": 4, "nll_nfe": 4, "dequant_draws": None,
              "status": "ok", "a_column_that_no_longer_exists": 1}  # fmt: skip
    frame = rows_frame([EvalRow.from_dict(legacy), _row(SETTINGS[1], nfe=20)])
    assert list(frame.columns) == RUN_COLUMNS
    assert {c: str(t) for c, t in frame.dtypes.items()} == parquet_dtypes()
    assert pd.isna(frame.loc[frame["solver"] == "euler", "tol"]).all()


def test_child_metrics_keep_their_names_and_order_for_each_likelihood_protocol():
    row = _row(SETTINGS[0], nfe=8, nll=1.5, nll_unit="nats", nll_protocol="per_sample_solver", nll_nfe=8,
               sample_metric=0.25, sample_metric_name="sliced_w2", ode_error=0.1, eval_seconds=2.0)  # fmt: skip
    assert list(row.child_metrics()) == ["nfe", "ode_error", "nll_nfe", "eval_seconds", "nll_nats_sample_solver", "sliced_w2"]


NEW_METRIC = '''
import runpy, sys, types
from pathlib import Path
import pandas as pd
import pytest
src = Path("orchestrator/rows.py").read_text()
line = '    ode_error: float = _col("float64", "value", math.nan, mlflow="metric", label="ODE error", kind="check", positive=True)\\n'
assert line in src
src = src.replace(line, line + '    sample_spread: float = _col("float64", "value", math.nan, mlflow="metric")\\n')
rows = types.ModuleType("orchestrator.rows"); rows.__file__ = "orchestrator/rows.py"
sys.modules["orchestrator.rows"] = rows
exec(compile(src, "orchestrator/rows.py", "exec"), rows.__dict__)
from fm_core.solvers import SolverSetting
from orchestrator.compare import compare_methods
from orchestrator.tables import rows_frame, summarize, to_markdown
from orchestrator.views import comparison_view, metric_names
made = [rows.EvalRow.of(SolverSetting("euler", nfe_budget=8), 10, trial_id=f"{p}-fm-independent-s{s}", path=p, objective="fm",
                        coupling="independent", seed=s, nfe=8, nll=1.0, nll_unit="nats", sample_spread=0.5 + s)
        for p in ("ot", "vp") for s in (0, 1)]
frame = rows_frame(made)
assert str(frame["sample_spread"].dtype) == "float64"
assert made[0].child_metrics()["sample_spread"] == 0.5
assert "sample_spread" in to_markdown(summarize(frame)).splitlines()[0]
(cell,) = compare_methods(frame, "FM-OT", "FM-VP", "sample_spread")
view = comparison_view(metric_names(made))
assert "metrics.`sample_spread`" in view["selectedColumns"]
print("ok")
'''


def test_a_new_value_field_is_a_parquet_column_a_child_metric_a_table_column_a_compare_metric_and_a_view_column():
    """EvalRow is the one place a measured quantity is declared: one more value field shows everywhere."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", NEW_METRIC], capture_output=True, text=True, timeout=120, cwd=repo)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_path_measures_and_per_sample_nfe_reach_child_metrics_tables_compare_and_the_view():
    """Issue 27's columns, declared once in EvalRow: child metrics under their names, table columns under their
    labels (per-sample NFE beside the batch's, as costs; the gap among the checks), compare and view columns."""
    made = [_row(SETTINGS[1], trial_id=f"{p}-fm-independent-s{s}", path=p, seed=s, nfe=20, straightness=0.5 + s,
                 path_energy=4.0 + p.startswith("v"), nfe_sample_mean=14.0, nfe_sample_median=14.0, nfe_sample_p90=20.0,
                 per_sample_gap=1e-4, nll=1.0, nll_unit="nats", sample_metric=0.3, sample_metric_name="sliced_w2")
            for p in ("ot", "vp") for s in (0, 1)]  # fmt: skip
    metrics = made[0].child_metrics()
    assert {k: metrics[k] for k in ("straightness", "path_energy", "nfe_sample_p90", "per_sample_gap")} == {
        "straightness": 0.5, "path_energy": 4.0, "nfe_sample_p90": 20.0, "per_sample_gap": 1e-4}
    header = [c.strip() for c in to_markdown(summarize(rows_frame(made))).splitlines()[0].split("|")]
    shown = [c for c in header if c in {"NFE", "NFE/sample mean", "NFE/sample median", "NFE/sample p90", "straightness",
                                        "path energy", "ODE error", "per-sample gap"}]  # fmt: skip
    assert shown == ["straightness", "path energy", "NFE", "NFE/sample mean", "NFE/sample median", "NFE/sample p90",
                     "per-sample gap"]  # fmt: skip
    (cell,) = compare_methods(rows_frame(made), "FM-VP", "FM-OT", "path_energy")
    assert (cell.comparison.mean_a, cell.comparison.mean_b) == (5.0, 4.0)
    view = comparison_view(metric_names(made))
    assert {"metrics.`straightness`", "metrics.`path_energy`", "metrics.`nfe_sample_mean`"} <= set(view["selectedColumns"])
    # Logged after the likelihood and the sample metric: the view's charts lead with NFE, NLL, sample metric.
    assert [c["metricKey"] for c in view["compareRunCharts"]][:3] == ["nfe", "nll_nats", "sliced_w2"]
    # A row without them (a fixed-step solver, per-sample solves off) logs none of them.
    assert not {"nfe_sample_mean", "per_sample_gap"} & set(_row(SETTINGS[0], nfe=8).child_metrics())


@pytest.mark.parametrize(("field", "value"), [
    ("train_step", "abc"), ("train_step", float("inf")), ("train_step", 2.5), ("train_step", True), ("seed", "x"),
    ("nll", "abc"), ("nll", float("-inf")), ("nll", False), ("solver", 5), ("status", ["ok"]), ("tol", {"a": 1}),
])  # fmt: skip
def test_a_row_read_back_holds_only_values_of_its_columns_types(field: str, value: object):
    """Rows come from files on storage and in a store anyone can edit: a value of another type is refused as it
    is read, naming its field, not a traceback in a table or a comparison later."""
    good = EvalRow.of(SolverSetting("euler", nfe_budget=8), 10, seed=0, nll=1.0).as_dict()
    assert json.dumps(EvalRow.from_dict(json.loads(json.dumps(good))).as_dict()) == json.dumps(good)  # NaN != NaN: compared as text
    with pytest.raises(ValueError, match=f"field '{field}'"):
        EvalRow.from_dict({**good, field: value})


def test_integers_are_read_as_numbers_where_a_column_holds_floats_and_nan_stays_missing():
    row = EvalRow.from_dict({**EvalRow.of(SolverSetting("dopri5", tol=1e-5), 10).as_dict(), "nll": 2, "ode_error": float("nan")})
    assert row.nll == 2.0 and isinstance(row.nll, float) and math.isnan(row.ode_error)
