"""Likelihood: closed-form Gaussian log-densities, Hutchinson unbiasedness, dtypes, shapes, bits/dim."""

from __future__ import annotations

import math

import pytest
import torch

from fm_core.analytic import GaussianData
from fm_core.likelihood import bits_per_dim, gaussian_log_prob, log_likelihood
from fm_core.paths import OTPath
from fm_core.sampling import FIXED_STAGES, SolverSetting


def _points(gaussian: GaussianData, n: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return gaussian.mu + gaussian.std * torch.randn(n, *gaussian.mu.shape, generator=g, dtype=gaussian.mu.dtype)


def test_exact_likelihood_matches_closed_form_at_tight_tolerance(gaussian_2d, float64):
    x1 = _points(gaussian_2d)
    res = log_likelihood(gaussian_2d.vector_field(OTPath(0.0)), x1, SolverSetting.adaptive("dopri5", 1e-10))
    assert float((res.log_prob - gaussian_2d.log_prob(x1)).abs().max()) < 1e-6
    # The noise end is where the flow's inverse sends the data: (x - mu) / s.
    torch.testing.assert_close(res.x0, (x1 - gaussian_2d.mu) / gaussian_2d.std, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("method", "nfe", "max_err"), [("euler", 100, 0.3), ("midpoint", 20, 1e-2), ("rk4", 20, 3e-3)])
def test_fixed_step_likelihood_within_expected_error_and_counts(gaussian_2d, float64, method, nfe, max_err):
    x1 = _points(gaussian_2d)
    res = log_likelihood(gaussian_2d.vector_field(OTPath(0.0)), x1, SolverSetting(method, nfe_budget=nfe))
    assert res.nfe == (nfe // FIXED_STAGES[method]) * FIXED_STAGES[method]
    assert float((res.log_prob - gaussian_2d.log_prob(x1)).abs().max()) < max_err


def test_sigma_min_changes_the_end_marginal(gaussian_2d, float64):
    """With sigma_min > 0 the OT path ends at N(mu, s^2 + sigma_min^2), not N(mu, s^2)."""
    path = OTPath(sigma_min=0.3)
    x1 = _points(gaussian_2d)
    res = log_likelihood(gaussian_2d.vector_field(path), x1, SolverSetting.adaptive("dopri5", 1e-10))
    std_end = gaussian_2d.marginal_std(path, 1.0)
    assert math.isclose(std_end, math.sqrt(0.25 + 0.09), rel_tol=1e-12)
    assert float((res.log_prob - gaussian_2d.log_prob(x1, std=std_end)).abs().max()) < 1e-6


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_agrees_with_exact_in_expectation(float64, probe):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).double()
    field = lambda t, x: net(torch.cat([x, t.expand(x.shape[0], 1)], dim=1))  # noqa: E731
    x1 = torch.randn(4, 3, dtype=torch.float64)
    solver = SolverSetting("rk4", nfe_budget=40)
    exact = log_likelihood(field, x1, solver).log_prob
    g = torch.Generator().manual_seed(1)
    # 200 copies of the points in one batch: each row gets its own probe (a fixed-step solver treats rows alike).
    copies = x1.repeat(200, 1)
    estimates = log_likelihood(field, copies, solver, divergence="hutchinson", probe=probe, generator=g).log_prob
    estimates = estimates.reshape(200, *x1.shape[:1])
    mean, sem = estimates.mean(0), estimates.std(0) / math.sqrt(estimates.shape[0])
    assert (estimates.std(0) > 1e-3).all()  # the estimator is really stochastic for this field
    assert ((mean - exact).abs() < 4 * sem + 1e-6).all()


def test_float32_works(gaussian_2d):
    g32 = GaussianData(gaussian_2d.mu.float(), gaussian_2d.std)
    x1 = _points(g32)
    res = log_likelihood(g32.vector_field(OTPath()), x1, SolverSetting.adaptive("dopri5", 1e-5))
    assert res.log_prob.dtype == torch.float32
    assert float((res.log_prob - g32.log_prob(x1)).abs().max()) < 1e-3


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_image_shaped_input(float64, divergence):
    gaussian = GaussianData(mu=torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(1, 4, 4), std=0.3)
    x1 = _points(gaussian, n=8)
    assert x1.shape == (8, 1, 4, 4)
    res = log_likelihood(gaussian.vector_field(OTPath()), x1, SolverSetting.adaptive("dopri5", 1e-9), divergence=divergence)
    # The field's Jacobian is a multiple of I, so even one Rademacher probe gives the exact trace.
    assert res.log_prob.shape == (8,)
    assert float((res.log_prob - gaussian.log_prob(x1)).abs().max()) < 1e-5


def test_prior_std_is_used(float64):
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(gaussian_log_prob(x, 2.0), gaussian_log_prob(x / 2.0) - 3 * math.log(2.0))


def test_bits_per_dim_of_uniform_density_is_eight_bits():
    x = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    uniform = lambda z: torch.full((z.shape[0],), -z[0].numel() * math.log(2.0))  # noqa: E731
    bpd = bits_per_dim(uniform, x, num_draws=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bpd, torch.full((6,), 8.0, dtype=torch.float64))


def test_importance_weighting_over_draws_never_hurts():
    """log of a mean >= mean of logs over the same draws, so K draws give bits/dim <= one draw's average."""
    x = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    density = lambda z: gaussian_log_prob(z, std=0.6)  # noqa: E731
    k = 20
    bpd_k = bits_per_dim(density, x, num_draws=k, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    bpd_1 = torch.stack([bits_per_dim(density, x, num_draws=1, generator=g) for _ in range(k)]).mean(0)
    assert (bpd_k <= bpd_1 + 1e-12).all() and (bpd_k < bpd_1).any()
