"""EMA in a trial: the average continues across a checkpoint (a resumed trial ends with the weights of an
uninterrupted one), evaluations use it, and every row says which weights it measured."""

from __future__ import annotations

import torch

from fm_core.solvers import SolverSetting
from orchestrator.validation import parse_sweep
from orchestrator.errors import CheckpointError
from orchestrator.plan import plan_sweep
from orchestrator.training_loop import TrialParts

SWEEP = {
    "name": "ema",
    "dataset": {"name": "moons"},
    "model": {"kind": "mlp", "hidden": 16, "depth": 2},
    "train": {"steps": 60, "batch_size": 32, "log_every": 10, "ema_decay": 0.95},
    "eval": {"samples": 50, "likelihood_points": 10, "reference_tol": None, "likelihood": {"solver": "euler", "nfe": 4}},
    "grid": {"path": ["ot"], "objective": ["fm"], "solver": ["euler"], "nfe": [4]},
}


def _runner(data=SWEEP) -> TrialParts:
    config = parse_sweep(data)
    key = plan_sweep(config).trainings[0]
    return TrialParts.build(config.for_training(key), key)


def test_a_resumed_trial_ends_with_the_ema_of_an_uninterrupted_one(tmp_path):
    straight = _runner()
    straight.trainer.train_until(60)
    first = _runner()
    first.trainer.train_until(30)
    first.state.save(tmp_path / "ckpt")
    resumed = _runner()
    resumed.state.restore(tmp_path / "ckpt")
    resumed.trainer.train_until(60)
    assert int(resumed.state.ema.n_averaged) == 60
    for a, b in zip(straight.state.ema.module.parameters(), resumed.state.ema.module.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # The average is not the weights: evaluating it is a choice the rows record.
    assert any(not torch.equal(a, b) for a, b in zip(resumed.state.ema.module.parameters(), resumed.state.model.parameters(), strict=True))


def test_evaluations_use_the_ema_and_rows_say_so():
    runner = _runner()
    runner.trainer.train_until(20)
    assert runner.state.evaluated_model is runner.state.ema.module
    rows, _ = runner.evaluator.evaluate([SolverSetting("euler", nfe_budget=4)])
    assert [r.weights for r in rows] == ["ema"] and rows[0].ok
    plain = _runner({**SWEEP, "train": {**SWEEP["train"], "ema_decay": None}})
    assert plain.state.ema is None and plain.state.evaluated_model is plain.state.model
    plain.trainer.train_until(10)
    assert [r.weights for r in plain.evaluator.evaluate([SolverSetting("euler", nfe_budget=4)])[0]] == ["model"]


def test_a_checkpoint_without_the_average_does_not_fit_a_trial_that_keeps_one(tmp_path):
    plain = _runner({**SWEEP, "train": {**SWEEP["train"], "ema_decay": None}})
    plain.trainer.train_until(10)
    plain.state.save(tmp_path / "plain")
    try:
        _runner().state.restore(tmp_path / "plain")
    except CheckpointError as err:
        assert "does not fit" in str(err)
    else:
        raise AssertionError("a checkpoint without EMA was restored into a trial with EMA")
