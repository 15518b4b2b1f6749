"""The typed evaluation row: every output (Parquet, MLflow child runs, tables) derives from EvalRow."""

from __future__ import annotations

import math

import pandas as pd

from fm_core.solvers import SolverSetting
from orchestrator.rows import EvalRow, parquet_columns, parquet_dtypes
from orchestrator.tables import GROUP_COLUMNS, RUN_COLUMNS, VALUE_COLUMNS, rows_frame

SETTINGS = [SolverSetting("euler", nfe_budget=8), SolverSetting("dopri5", tol=1e-4), SolverSetting("dopri5", tol=1.4e-4)]


def _row(setting: SolverSetting, **values) -> EvalRow:
    base = {"trial_id": "vp-fm-independent-s0", "path": "vp", "objective": "fm", "coupling": "independent", "seed": 0}
    return EvalRow.of(setting, 100, **{**base, **values})


def test_every_child_run_carries_the_same_param_names_whatever_the_setting_or_outcome():
    rows = [_row(s) for s in SETTINGS] + [_row(SETTINGS[0], status="failed", error="boom"), _row(SETTINGS[1], dequant_draws=4)]
    names = {frozenset(r.child_params()) for r in rows}
    assert names == {frozenset({"path", "objective", "coupling", "train_axes", "seed", "solver", "tol", "nfe_budget",
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
    assert "seed" not in GROUP_COLUMNS and set(VALUE_COLUMNS) == {"nfe", "nll", "sample_metric", "ode_error"}
    legacy = {"train_step": 5, "solver": "euler", "tol": None, "nfe_budget": 4, "nll_nfe": 4, "dequant_draws": None,
              "status": "ok", "a_column_that_no_longer_exists": 1}  # fmt: skip
    frame = rows_frame([EvalRow.from_dict(legacy), _row(SETTINGS[1], nfe=20)])
    assert list(frame.columns) == RUN_COLUMNS
    assert {c: str(t) for c, t in frame.dtypes.items()} == parquet_dtypes()
    assert pd.isna(frame.loc[frame["solver"] == "euler", "tol"]).all()
