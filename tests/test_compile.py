"""train.compile: the model trains through torch.compile (inductor, on the CPU here); where compilation fails
the trial says so in one line and trains uncompiled, or fails with the reason when the file forbids that."""

from __future__ import annotations

import pytest
import torch

from orchestrator.validation import parse_sweep
from orchestrator.plan import plan_sweep
from orchestrator.training_loop import TrialParts

SWEEP = {
    "name": "compiled",
    "dataset": {"name": "moons"},
    "model": {"kind": "mlp", "hidden": 16, "depth": 2},
    "train": {"steps": 20, "batch_size": 32, "log_every": 5, "compile": True},
    "eval": {"samples": 20, "likelihood_points": 4, "reference_tol": None},
    "grid": {"path": ["ot"], "objective": ["fm"], "solver": ["euler"], "nfe": [4]},
}


def _runner(**train) -> TrialParts:
    config = parse_sweep({**SWEEP, "train": {**SWEEP["train"], **train}})
    key = plan_sweep(config).trainings[0]
    return TrialParts.build(config.for_training(key), key)


def test_a_compiled_model_trains_and_shares_its_weights_with_the_checkpointed_one():
    runner = _runner()
    runner.trainer.train_until(20)
    wrapper = runner.trainer._compiled[1]
    assert wrapper.failed is None, wrapper.failed
    assert len(runner.state.losses) == 4 and all(v == v for _, v in runner.state.losses)
    eager = _runner(compile=False)
    eager.trainer.train_until(20)
    for a, b in zip(runner.state.model.parameters(), eager.state.model.parameters(), strict=True):  # same steps, same result
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _failing_compile(net, *args, **kwargs):
    def compiled(*a, **k):
        raise RuntimeError("backend 'inductor' raised:\nCppCompileError: no compiler")

    return compiled


def test_a_failed_compilation_is_one_line_and_training_goes_on(monkeypatch: pytest.MonkeyPatch, capfd):
    monkeypatch.setattr(torch, "compile", _failing_compile)
    runner = _runner()
    runner.trainer.train_until(20)
    err = capfd.readouterr().err
    assert err.count("torch.compile failed") == 1 and "training uncompiled" in err
    assert "RuntimeError: backend 'inductor' raised:" in err and runner.state.step == 20


def test_without_fallback_a_failed_compilation_fails_the_trial_with_its_reason(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch, "compile", _failing_compile)
    with pytest.raises(RuntimeError, match="torch.compile failed .*compile_fallback is false"):
        _runner(compile_fallback=False).trainer.train_until(20)
