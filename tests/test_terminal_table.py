"""Printed tables and comparisons read whole at 80 columns: no number split across lines, whatever layout the
width calls for; captions promise an interval only where a row has one, and positive values' intervals stay
positive."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from rich.console import Console

from fm_core.solvers import SolverSetting
from orchestrator.compare import compare_methods
from orchestrator.comparison_text import describe
from orchestrator.results import terminal_table
from orchestrator.rows import EvalRow
from orchestrator.tables import cell_legend, display_table, rows_frame, summarize
from tests.layout_helpers import assert_numbers_whole


def _rows(seeds: int = 3) -> list[EvalRow]:
    """Four methods x two solver settings, every value column measured, spreads that give long numbers."""
    rows = []
    for path, objective in (("ot", "fm"), ("vp", "fm"), ("vp", "sm"), ("ve", "fm")):
        for seed in range(seeds):
            for setting, nfe in ((SolverSetting.adaptive("dopri5", 1e-5), (40, 190, 640)[seed]), (SolverSetting("midpoint", nfe_budget=8), 8)):
                rows.append(EvalRow.of(setting, 2000, trial_id=f"{path}-{objective}-independent-s{seed}", path=path, objective=objective,
                                       coupling="independent", seed=seed, nfe=nfe, nll=-1.2345 + 0.4321 * seed, nll_unit="nats",
                                       nll_protocol="shared", nll_solver="dopri5_tol1e-05", sample_metric=0.012345 * (1 + seed),
                                       sample_metric_name="sliced_w2", ode_error=0.00012345 * (3 - seed)))  # fmt: skip
    return rows


def _printed(runs: pd.DataFrame, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), highlight=False)
    console.print(terminal_table(runs, console), soft_wrap=False)
    return console.file.getvalue()


@pytest.mark.parametrize("width", [200, 120, 80, 40])
def test_the_printed_table_keeps_every_number_on_one_line(width: int):
    runs = rows_frame(_rows())
    shown = display_table(summarize(runs))
    cells = [str(v) for column in shown.columns for v in shown[column]]
    printed = _printed(runs, width)
    assert_numbers_whole(cells, printed, width)
    if width == 80:  # the layout at 80: tables of fewer value columns, the NLL header shortened and explained below
        assert printed.count("┃ method") == 2 and "NLL: nats, dopri5_tol1e-05" in printed


def test_the_caption_promises_an_interval_only_where_a_row_has_one():
    one = summarize(rows_frame(_rows(seeds=1)))
    assert cell_legend(one) == "cells: one seed's value (no std or interval from one seed)"
    assert "95 %" not in _printed(rows_frame(_rows(seeds=1)), 80) and "[" not in "".join(display_table(one)["NFE"])
    three = summarize(rows_frame(_rows()))
    assert cell_legend(three).startswith("cells: mean ± std over seeds [95 % Student-t interval of the mean; of sliced_w2, NFE, ODE error:")
    mixed = summarize(rows_frame(_rows() + [r.replace(seed=9, trial_id="ot-fm-independent-s9", path="ot", coupling="minibatch_ot")
                                            for r in _rows(seeds=1)[:2]]))  # fmt: skip
    assert cell_legend(mixed).endswith("; a row of one seed: its value alone")


def test_positive_values_intervals_stay_positive_in_the_table():
    table = summarize(rows_frame(_rows()))
    dopri5 = table[table["solver"] == "dopri5"]
    assert (dopri5["nfe_ci_low"] > 0).all() and (table["ode_error_ci_low"] > 0).all() and (table["sample_metric_ci_low"] > 0).all()
    # The linear t-interval of the same NFE (40, 190, 640) would reach below 0; NLL (nats) may be negative, so it stays linear.
    assert (dopri5["nfe_mean"] - 4.303 * dopri5["nfe_std"] / 3**0.5 < 0).all()  # t_{0.975, 2} = 4.303
    assert (table["nll_ci_low"] < table["nll_mean"]).all() and (table["nll_ci_low"] < 0).all()


def test_a_comparison_keeps_every_number_on_one_line_at_80_columns():
    runs = rows_frame(_rows())
    console = Console(width=80, file=io.StringIO(), highlight=False)
    texts = []
    for metric, margin in (("nfe", None), ("NLL", 0.5), ("ODE error", None)):
        for cell in compare_methods(runs, "FM-OT", "SM-VP", metric, margin):
            texts += describe(cell)
            console.print("\n".join(describe(cell)), markup=False, soft_wrap=False)
    assert_numbers_whole(texts, console.file.getvalue(), 80)
