"""Paths: targets are the time derivative of their flows, ends are safe, samplers match densities."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import jvp

from fm_core.paths import OTPath, VEPath, VPPath, make_path

PATHS = [OTPath(0.0), OTPath(1e-4), VPPath(), VEPath(sigma_min=0.01, sigma_max=5.0)]


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_target_is_time_derivative_of_flow(path, float64):
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(64, 3, generator=g), torch.randn(64, 3, generator=g)
    # Include both ends: t = 0 and just inside the singular end t_max (the path is held constant past it).
    t = torch.cat([torch.rand(62, generator=g) * path.t_max, torch.tensor([0.0, path.t_max - 1e-9])])
    _, target = path.sample(x0, x1, t)
    _, dpsi = jvp(lambda tt: path.sample(x0, x1, tt)[0], (t,), (torch.ones_like(t),))
    assert torch.isfinite(target).all()
    torch.testing.assert_close(target, dpsi, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_conditional_field_at_x_t_equals_target(path, float64):
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(32, 2, generator=g), torch.randn(32, 2, generator=g)
    t = torch.rand(32, generator=g) * path.t_max
    x_t, target = path.sample(x0, x1, t)
    torch.testing.assert_close(path.conditional_vector_field(x_t, x1, t), target)


def test_boundary_values():
    ot = OTPath(sigma_min=1e-3)
    a, s = ot.alpha_sigma(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert a.tolist() == [0.0, 1.0] and s[0] == 1.0 and abs(float(s[1]) - 1e-3) < 1e-12
    vp = VPPath()
    a, s = vp.alpha_sigma(torch.tensor([0.0, vp.t_max], dtype=torch.float64))
    # Noise end is almost N(0, 1): alpha_0 = exp(-T(1)/2) with T(1) = 0.1 + 19.9 / 2.
    assert math.isclose(float(a[0]), math.exp(-0.5 * (0.1 + 0.5 * 19.9)), rel_tol=1e-12)
    assert 0.0 < float(s[1]) < 1e-2 and abs(vp.prior_std - 1.0) < 1e-4
    ve = VEPath(sigma_min=0.01, sigma_max=7.0)
    assert math.isclose(ve.prior_std, 7.0, rel_tol=1e-12)


@pytest.mark.parametrize("path", [VPPath(), VEPath()], ids=repr)
def test_field_stays_finite_past_the_singular_end(path):
    """Adaptive solvers overshoot the last time; the path must not return NaN there."""
    t = torch.tensor([path.t_max, 1.0, 1.01])
    for v in (*path.alpha_sigma(t), *path.d_alpha_sigma(t)):
        assert torch.isfinite(v).all()


def test_vp_score_conversion_is_the_papers_probability_flow(float64):
    vp = VPPath()
    g = torch.Generator().manual_seed(2)
    x, score = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g)
    for t in (0.0, 0.3, 0.9, vp.t_max):
        tt = torch.tensor(t)
        expected = 0.5 * vp.beta(1.0 - tt) * (x + score)
        torch.testing.assert_close(vp.score_to_vector_field(x, score, tt), expected)


def test_vp_likelihood_weighted_times_follow_their_density(float64):
    """ScoreFlow's importance sampler: times follow q(s) ~ beta(s) / (1 - exp(-T(s))), s = 1 - t."""
    vp = VPPath()
    t, w = vp.likelihood_weighted_t(200_000, generator=torch.Generator().manual_seed(3))
    assert t.min() >= 0.0 and t.max() <= vp.t_max and torch.all(w == w[0])
    s = (1.0 - t).double()
    grid = torch.linspace(vp.eps, 1.0, 200_001, dtype=torch.float64)
    dens = vp.beta(grid) / -torch.expm1(-vp._T(grid))
    cdf = torch.cumulative_trapezoid(dens, grid)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), cdf]) / cdf[-1]
    for q in (1e-3, 1e-2, 0.1, 0.5):
        expected = float(torch.interp(torch.tensor(q), grid, cdf)) if hasattr(torch, "interp") else float(
            cdf[torch.searchsorted(grid, torch.tensor(q, dtype=torch.float64))]
        )
        assert abs(float((s <= q).double().mean()) - expected) < 5e-3
    # The weight is the normaliser Z of g^2 / sigma^2 over [eps, 1].
    assert math.isclose(float(w[0]), float(torch.trapezoid(dens, grid)), rel_tol=1e-3)


def test_make_path_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown path 'foo'.*ot, vp, ve"):
        make_path("foo")
    assert make_path("ot", sigma_min=0.1).sigma_min == 0.1
