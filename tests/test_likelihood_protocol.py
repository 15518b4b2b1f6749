"""The likelihood protocol: NLL is a property of the trained model, integrated once per checkpoint with the
file's likelihood solver (the paper's dopri5 at 1e-5), unless the file asks for one per sample solver."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.validation import parse_sweep
from orchestrator.plan import plan_sweep
from orchestrator.rows import EvalRow
from orchestrator.training_loop import TrialParts

SWEEP: dict[str, Any] = {
    "name": "protocol",
    "dataset": {"name": "moons"},
    "model": {"kind": "mlp", "hidden": 16, "depth": 2},
    "train": {"steps": 30, "batch_size": 64},
    "eval": {"samples": 64, "likelihood_points": 32, "reference_tol": None},
    "grid": {"path": ["ot"], "objective": ["fm"], "solver": ["euler", "dopri5"], "nfe": [4], "tol": [1e-3]},
}


def _rows(likelihood: dict[str, Any] | None) -> list[EvalRow]:
    data = {**SWEEP, "eval": {**SWEEP["eval"], **({"likelihood": likelihood} if likelihood else {})}}
    config = parse_sweep(data)
    plan = plan_sweep(config)
    runner = TrialParts.build(config.for_training(plan.trainings[0]), plan.trainings[0])
    runner.trainer.train_until(config.train.steps)
    rows, _ = runner.evaluator.evaluate(plan.settings)
    assert [r.status for r in rows] == ["ok", "ok"], [r.error for r in rows]
    return rows


def test_by_default_every_row_of_a_checkpoint_shares_one_likelihood_and_its_protocol():
    rows = _rows(None)
    assert {r.setting.label for r in rows} == {"euler_nfe4", "dopri5_tol1e-03"}
    protocol = {(r.nll, r.nll_protocol, r.nll_solver, r.nll_nfe, r.nll_divergence, r.nll_points) for r in rows}
    assert len(protocol) == 1
    nll, kind, solver, nfe, divergence, points = protocol.pop()
    assert (kind, solver, divergence, points) == ("shared", "dopri5_tol1e-05", "exact", 32) and nfe > 4
    # The sample solver's own cost stays in each row.
    assert {r.setting.label: r.nfe for r in rows}["euler_nfe4"] == 4
    assert "nll_nats" in rows[0].child_metrics() and rows[0].child_metrics()["nll_nats"] == pytest.approx(nll, rel=1e-3)


def test_a_likelihood_per_sample_solver_is_the_old_behaviour_under_its_own_name():
    rows = {r.setting.label: r for r in _rows({"solver": "per_sample_solver"})}
    euler, dopri = rows["euler_nfe4"], rows["dopri5_tol1e-03"]
    assert euler.nll_protocol == dopri.nll_protocol == "per_sample_solver"
    assert (euler.nll_solver, dopri.nll_solver) == ("euler_nfe4", "dopri5_tol1e-03")
    assert euler.nll_nfe == 4 and euler.nll != dopri.nll
    metrics = euler.child_metrics()
    assert "nll_nats_sample_solver" in metrics and "nll_nats" not in metrics


def test_a_named_fixed_step_likelihood_solver_is_used_for_every_row():
    rows = _rows({"solver": "rk4", "nfe": 8})
    assert {(r.nll_solver, r.nll_nfe) for r in rows} == {("rk4_nfe8", 8)}
