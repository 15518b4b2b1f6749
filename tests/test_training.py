"""A short CPU training of the paper's 2D MLP learns the checkerboard."""

from __future__ import annotations

import math

import pytest
import torch

from fm_core.datasets import make_dataset
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


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_equals_the_closed_form_average_of_the_weights_it_saw(warmup: bool):
    """avg_n = sum_k w_k theta_k with w_k = (1 - d_k) prod_{j > k} d_j (the first update copies: d_0 = 0)."""
    from fm_core.training import ema_decay_at, make_ema

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = make_ema(model, decay=0.9, warmup=warmup)
    seen = []
    for _ in range(25):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        seen.append([p.detach().clone() for p in model.parameters()])
        ema.update_parameters(model)
    decays = [0.0] + [ema_decay_at(n, 0.9, warmup) for n in range(1, len(seen))]
    weights = [(1 - decays[k]) * math.prod(decays[k + 1 :]) for k in range(len(seen))]
    assert sum(weights) == pytest.approx(1.0)
    for i, averaged in enumerate(ema.module.parameters()):
        expected = sum(w * step[i] for w, step in zip(weights, seen, strict=True))
        torch.testing.assert_close(averaged, expected, rtol=1e-5, atol=1e-6)
    assert int(ema.n_averaged) == 25


@pytest.mark.parametrize("accumulation", [2, 4])
def test_gradient_accumulation_gives_the_whole_batchs_gradient(accumulation: int):
    """Micro-batch losses weighted by their share add up to the batch mean: the same loss and gradient (the
    noise and times are drawn in the same order), so `grad_accum` reaches a global batch with fewer workers."""
    from fm_core.training import train_step

    objective = make_objective("fm", make_path("ot"))
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    results = []
    for acc in (1, accumulation):
        torch.manual_seed(0)
        model = MLP(dim=2, hidden=16, depth=2)
        optimizer, _ = make_optimizer(model, 1e-3)
        optimizer.step = lambda: None  # keep the gradients of this step to compare
        stats = train_step(model, objective, optimizer, x1, generator=torch.Generator().manual_seed(1), accumulation=acc)
        results.append((stats.loss, torch.cat([p.grad.flatten() for p in model.parameters()])))
    (loss, grad), (acc_loss, acc_grad) = results
    assert acc_loss == pytest.approx(loss, rel=1e-6)
    torch.testing.assert_close(acc_grad, grad, rtol=1e-5, atol=1e-6)
