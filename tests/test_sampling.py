"""ODE sampling: closed-form Gaussian transport, exact NFE counts, solver validation."""

from __future__ import annotations

import pytest
import torch

from fm_core.analytic import GaussianData
from fm_core.objectives import make_objective
from fm_core.paths import OTPath, VPPath
from fm_core.sampling import FIXED_STAGES, SolverSetting, sample


def _ot_transport_error(gaussian: GaussianData, solver: SolverSetting, n: int = 512) -> tuple[float, int]:
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sol = sample(gaussian.vector_field(OTPath(0.0)), x0, solver)
    exact = gaussian.mu + gaussian.std * x0  # the OT marginal flow maps x0 to mu + s x0
    return float((sol.x - exact).abs().max()), sol.nfe


def test_dopri5_tight_tolerance_maps_noise_exactly(gaussian_2d, float64):
    err, nfe = _ot_transport_error(gaussian_2d, SolverSetting.adaptive("dopri5", 1e-10))
    assert err < 1e-6
    assert nfe > 10


@pytest.mark.parametrize(
    ("method", "nfe", "max_err"),
    [("euler", 100, 5e-2), ("midpoint", 20, 2e-3), ("heun3", 30, 5e-4), ("rk4", 20, 5e-4), ("rk4", 100, 1e-6)],
)
def test_fixed_step_solvers_within_expected_error(gaussian_2d, float64, method, nfe, max_err):
    err, used = _ot_transport_error(gaussian_2d, SolverSetting(method, nfe_budget=nfe))
    assert used == (nfe // FIXED_STAGES[method]) * FIXED_STAGES[method]
    assert err < max_err


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_fixed_step_error_shrinks_at_the_solvers_order(gaussian_2d, float64, method, order):
    stages = FIXED_STAGES[method]
    coarse, _ = _ot_transport_error(gaussian_2d, SolverSetting(method, nfe_budget=8 * stages))
    fine, _ = _ot_transport_error(gaussian_2d, SolverSetting(method, nfe_budget=16 * stages))
    rate = coarse / fine
    # At least the solver's order (a smooth linear field can converge faster than the bound).
    assert rate > 2 ** order * 0.6
    assert fine < coarse


@pytest.mark.parametrize("method", list(FIXED_STAGES))
@pytest.mark.parametrize("budget", [4, 7, 10, 33])
def test_nfe_is_steps_times_stages(gaussian_2d, method, budget):
    spec = SolverSetting(method, nfe_budget=budget)
    x0 = torch.randn(8, 2)
    sol = sample(gaussian_2d.vector_field(OTPath()), x0, spec)
    assert sol.nfe == (budget // FIXED_STAGES[method]) * FIXED_STAGES[method] == spec.steps * FIXED_STAGES[method]


def test_vp_probability_flow_with_analytic_score_reproduces_gaussian(gaussian_2d, float64):
    vp = VPPath()
    score = gaussian_2d.score(vp)
    field = lambda t, x: vp.score_to_vector_field(x, score(t, x), t)  # noqa: E731
    x0 = torch.randn(4096, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sol = sample(field, x0, SolverSetting.adaptive("dopri5", 1e-9), (0.0, vp.t_max))
    # The field is linear, so its flow is x -> alpha_1 mu + m_1 / m_0 (x - alpha_0 mu).
    a0 = float(vp.alpha_sigma(torch.tensor(0.0))[0])
    a1 = float(vp.alpha_sigma(torch.tensor(vp.t_max))[0])
    m0, m1 = gaussian_2d.marginal_std(vp, 0.0), gaussian_2d.marginal_std(vp, vp.t_max)
    exact = a1 * gaussian_2d.mu + m1 / m0 * (x0 - a0 * gaussian_2d.mu)
    assert float((sol.x - exact).abs().max()) < 1e-5
    torch.testing.assert_close(sol.x.mean(0), gaussian_2d.mu, atol=0.03, rtol=0)
    torch.testing.assert_close(sol.x.std(0), torch.full((2,), 0.5, dtype=torch.float64), atol=0.02, rtol=0)


def test_ddpm_and_sm_networks_give_the_same_field_for_the_same_score(gaussian_2d, float64):
    vp = VPPath()
    score = gaussian_2d.score(vp)

    class ScoreNet(torch.nn.Module):
        def forward(self, x, t):
            return score(t, x)

    class NoiseNet(torch.nn.Module):
        def forward(self, x, t):
            _, sigma = vp.alpha_sigma(torch.as_tensor(t, dtype=x.dtype))
            return -sigma.reshape(-1, *([1] * (x.ndim - 1))) * score(t, x)

    x = torch.randn(16, 2, dtype=torch.float64)
    t = torch.tensor(0.37, dtype=torch.float64)
    v_sm = make_objective("sm", vp).vector_field(ScoreNet())(t, x)
    v_ddpm = make_objective("ddpm", vp).vector_field(NoiseNet())(t, x)
    torch.testing.assert_close(v_sm, v_ddpm)
    torch.testing.assert_close(v_sm, gaussian_2d.vector_field(vp)(t, x))


def test_trajectory_at_requested_times(gaussian_2d):
    x0 = torch.randn(10, 2)
    sol = sample(gaussian_2d.vector_field(OTPath()), x0, SolverSetting("midpoint", nfe_budget=20), t_eval=[0.0, 0.5, 1.0])
    assert sol.trajectory is not None and sol.trajectory.shape == (3, 10, 2)
    torch.testing.assert_close(sol.trajectory[0], x0)
    torch.testing.assert_close(sol.trajectory[-1], sol.x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"solver": "euler"}, "needs an NFE budget"),
        ({"solver": "rk4", "nfe_budget": 3}, "at least 4"),
        ({"solver": "euler", "nfe_budget": 10, "tol": 1e-5}, "not a tolerance"),
        ({"solver": "dopri5", "tol": -1e-5}, "positive tolerance"),
        ({"solver": "dopri5", "tol": 1e-5, "nfe_budget": 10}, "not an NFE budget"),
        ({"solver": "leapfrog", "nfe_budget": 10}, "unknown solver 'leapfrog'"),
    ],
)
def test_solver_setting_rejects_nonsense(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SolverSetting(**kwargs)
