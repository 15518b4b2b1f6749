"""Mixed precision: bf16 autocast trains the digits U-Net on the CPU and its loss falls; fp16 trains with its
gradient scaler (whose state a checkpoint keeps); sampling precision is separate and likelihoods stay fp32."""

from __future__ import annotations

import pytest
import torch

from fm_core.precision import Precision
from fm_core.solvers import SolverSetting
from orchestrator.validation import parse_sweep
from orchestrator.plan import plan_sweep
from orchestrator.training_loop import TrialParts

DIGITS = {
    "name": "precision",
    "dataset": {"name": "digits"},
    "model": {"kind": "unet", "model_channels": 8, "channel_mult": [1, 2], "attention_resolutions": [4], "num_heads": 2},
    "train": {"steps": 60, "batch_size": 32, "lr": 0.003, "log_every": 1},
    "eval": {"samples": 16, "likelihood_points": 4, "divergence": "hutchinson", "reference_tol": None,
             "likelihood": {"solver": "euler", "nfe": 2}},
    "grid": {"path": ["ot"], "objective": ["fm"], "solver": ["euler"], "nfe": [2]},
}  # fmt: skip


def _runner(train: dict, evaluation: dict | None = None) -> TrialParts:
    config = parse_sweep({**DIGITS, "train": {**DIGITS["train"], **train}, "eval": {**DIGITS["eval"], **(evaluation or {})}})
    key = plan_sweep(config).trainings[0]
    return TrialParts.build(config.for_training(key), key)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_bf16_autocast_trains_the_digits_unet_on_the_cpu_and_the_loss_falls():
    runner = _runner({"precision": "bf16"})
    x = runner.state.dataset.sample(4, torch.Generator().manual_seed(0))
    with runner.state.precision.autocast():
        assert runner.state.model(x, torch.full((4,), 0.5)).dtype == torch.bfloat16  # the forward pass is bf16
    runner.trainer.train_until(60)
    losses = [loss for _, loss in runner.state.losses]
    assert len(losses) == 60 and all(map(lambda v: v == v, losses))
    assert _mean(losses[-10:]) < 0.8 * _mean(losses[:10]), (losses[:10], losses[-10:])
    assert next(runner.state.model.parameters()).dtype == torch.float32  # weights stay fp32 (autocast, not .half())


def test_fp16_trains_with_its_gradient_scaler_and_checkpoints_its_state(tmp_path):
    runner = _runner({"precision": "fp16"})
    assert runner.state.precision.scaler is not None
    runner.trainer.train_until(30)
    assert all(v == v for _, v in runner.state.losses)
    scale = runner.state.precision.scaler.get_scale()
    runner.state.save(tmp_path / "ckpt")
    resumed = _runner({"precision": "fp16"})
    resumed.state.restore(tmp_path / "ckpt")
    assert resumed.state.precision.scaler.get_scale() == scale and resumed.state.step == 30


def test_sampling_precision_is_separate_and_the_likelihood_stays_fp32():
    runner = _runner({}, {"precision": "bf16"})
    assert runner.state.precision.dtype is None and runner.state.sampling_precision.dtype == torch.bfloat16
    runner.trainer.train_until(5)
    (row,), samples = runner.evaluator.evaluate([SolverSetting("euler", nfe_budget=2)])
    assert row.ok and samples["euler_nfe2"].dtype == torch.float32
    fp32 = _runner({})
    fp32.trainer.train_until(5)
    (reference,), _ = fp32.evaluator.evaluate([SolverSetting("euler", nfe_budget=2)])
    assert row.nll == pytest.approx(reference.nll, rel=1e-6)  # same weights, same fp32 likelihood


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Precision("fp8")
