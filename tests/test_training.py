"""A short CPU training of the paper's 2D MLP learns the checkerboard."""

from __future__ import annotations

import pytest
import torch

from fm_core.data import make_dataset
from fm_core.metrics import sliced_wasserstein
from fm_core.models.mlp import MLP
from fm_core.objectives import make_objective
from fm_core.paths import make_path
from fm_core.sampling import SolverSetting, sample
from fm_core.training import NonFiniteLossError, fit, lr_lambda, make_optimizer, train_step


def _samples(model, n: int = 2000) -> torch.Tensor:
    field = make_objective("fm", make_path("ot")).vector_field(model)
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return sample(field, x0, SolverSetting("midpoint", nfe_budget=40)).x


def test_short_cfm_training_lowers_loss_and_improves_sliced_wasserstein():
    torch.manual_seed(0)
    data = make_dataset("checkerboard")
    model = MLP(dim=2, hidden=128, depth=3)
    reference = data.reference(2000)
    sw_before = sliced_wasserstein(_samples(model), reference)
    result = fit(model, make_objective("fm", make_path("ot")), data.sample, steps=600, batch_size=256, lr=2e-3, seed=0)
    first, last = sum(result.losses[:50]) / 50, sum(result.losses[-50:]) / 50
    assert last < 0.9 * first
    sw_after = sliced_wasserstein(_samples(model), reference)
    assert sw_after < 0.5 * sw_before


def test_nan_loss_raises_a_named_error():
    model = MLP(dim=2, hidden=8, depth=2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    optimizer, _ = make_optimizer(model, 1e-3)
    with pytest.raises(NonFiniteLossError, match="nan"):
        train_step(model, make_objective("fm", make_path("ot")), optimizer, torch.randn(4, 2))


def test_polynomial_schedule_warms_up_then_decays_to_zero():
    f = lr_lambda("poly", warmup=10, total=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == 0.0
    with pytest.raises(ValueError, match="schedule"):
        lr_lambda("cosine", 0, 1)
