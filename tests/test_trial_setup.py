"""What crosses into Ray is one frozen, typed setup per trial, built once in the driver: a trial (and each of its
Ray Train workers) unpickles it and uses it as it is, without validating the sweep again."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from orchestrator.cells import training_cell
from orchestrator.pass_work import TRAIN, WorkItem
from orchestrator.plan import plan_sweep
from orchestrator.records import trial_identity, trial_params, trial_summary
from orchestrator.schema import SweepConfig, TrainConfig
from orchestrator.trial_setup import TrialSetup, build_pass_setup
from orchestrator.validation import parse_sweep

SWEEP = {
    "name": "setup",
    "dataset": {"name": "moons"},
    "model": {"kind": "mlp", "hidden": 8, "depth": 2},
    "train": {"steps": 10, "batch_size": 8},
    "grid": {"path": ["ot"], "objective": ["fm"], "solver": ["euler"], "nfe": [4],
             "train": {"lr": [0.001, 0.01], "time_sampling": [{"kind": "uniform"}, {"kind": "logit_normal", "loc": 0, "scale": 1}]}},
}  # fmt: skip


def test_a_pickled_pass_setup_is_used_by_its_trials_as_it_is(monkeypatch: pytest.MonkeyPatch):
    config = parse_sweep(SWEEP)
    plan = plan_sweep(config)
    work = [WorkItem(key, training_cell(config, key), TRAIN, "new") for key in plan.trainings]
    setup = build_pass_setup(config, plan, work, tracking_uri="sqlite:///x.db", experiment_id="1", storage_root="/s",
                             train_storage="/s/train", pass_name="tune")  # fmt: skip
    expected = {k.trial_id: (trial_params(config, k), trial_identity(config, k)) for k in plan.trainings}
    shipped = pickle.dumps(setup)

    def refuse(*args, **kwargs):
        raise AssertionError("validated again")

    for model in (SweepConfig, TrainConfig):
        monkeypatch.setattr(model, "model_validate", classmethod(refuse))
    trials = pickle.loads(shipped).trials
    assert sorted(trials) == sorted(k.trial_id for k in plan.trainings) and len(trials) == 4
    for trial_id, trial in trials.items():
        assert isinstance(trial, TrialSetup)
        with pytest.raises(dataclasses.FrozenInstanceError):
            trial.pass_name = "other"  # type: ignore[misc]
        # Its config is the one its training sees (the grid.train values applied) ...
        assert trial.config.train.lr == trial.key.overrides["lr"]
        assert trial.config.train.time_sampling.kind == trial.key.overrides["time_sampling"]["kind"]
        # ... and what a trial records of it needs no validation, and is what the driver computes.
        assert (trial_params(trial.config, trial.key), trial_identity(trial.config, trial.key)) == expected[trial_id]
        assert trial_summary(trial.config, trial.key, None, None)["cell"] == trial.cell
        assert trial.settings == tuple(plan.settings) and trial.snapshots.endswith(trial.cell)
