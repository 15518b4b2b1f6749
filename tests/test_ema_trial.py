"""EMA in a trial: the average continues across a checkpoint (a resumed trial ends with the weights of an
uninterrupted one), evaluations use it, and every row says which weights it measured."""

from __future__ import annotations

import torch

from fm_core.solvers import SolverSetting
from orchestrator.validation import parse_sweep
from orchestrator.plan import plan_sweep
from orchestrator.trial import CheckpointError, TrialRunner

SWEEP = {
    "name": "ema",
    "dataset": {"name": "moons"},
    "model": {"kind": "mlp", "hidden": 16, "depth": 2},
    "train": {"steps": 60, "batch_size": 32, "log_every": 10, "ema_decay": 0.95},
    "eval": {"samples": 50, "likelihood_points": 10, "reference_tol": None, "likelihood": {"solver": "euler", "nfe": 4}},
    "grid": {"path": ["ot"], "objective": ["fm"], "solver": ["euler"], "nfe": [4]},
}


def _runner(data=SWEEP) -> TrialRunner:
    config = parse_sweep(data)
    return TrialRunner(config, plan_sweep(config).trainings[0])


def test_a_resumed_trial_ends_with_the_ema_of_an_uninterrupted_one(tmp_path):
    straight = _runner()
    straight.train_until(60)
    first = _runner()
    first.train_until(30)
    first.save(tmp_path / "ckpt")
    resumed = _runner()
    resumed.restore(tmp_path / "ckpt")
    resumed.train_until(60)
    assert int(resumed.ema.n_averaged) == 60
    for a, b in zip(straight.ema.module.parameters(), resumed.ema.module.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # The average is not the weights: evaluating it is a choice the rows record.
    assert any(not torch.equal(a, b) for a, b in zip(resumed.ema.module.parameters(), resumed.model.parameters(), strict=True))


def test_evaluations_use_the_ema_and_rows_say_so():
    runner = _runner()
    runner.train_until(20)
    assert runner.evaluated_model is runner.ema.module
    rows, _ = runner.evaluate([SolverSetting("euler", nfe_budget=4)])
    assert [r.weights for r in rows] == ["ema"] and rows[0].ok
    plain = _runner({**SWEEP, "train": {**SWEEP["train"], "ema_decay": None}})
    assert plain.ema is None and plain.evaluated_model is plain.model
    plain.train_until(10)
    assert [r.weights for r in plain.evaluate([SolverSetting("euler", nfe_budget=4)])[0]] == ["model"]


def test_a_checkpoint_without_the_average_does_not_fit_a_trial_that_keeps_one(tmp_path):
    plain = _runner({**SWEEP, "train": {**SWEEP["train"], "ema_decay": None}})
    plain.train_until(10)
    plain.save(tmp_path / "plain")
    try:
        _runner().restore(tmp_path / "plain")
    except CheckpointError as err:
        assert "does not fit" in str(err)
    else:
        raise AssertionError("a checkpoint without EMA was restored into a trial with EMA")
