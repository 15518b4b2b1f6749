"""Straightness and path energy from the sampling solve itself: zero on straight paths, the hand computation
of a constructed field, the closed form of a linear field, and no change to the solve they ride on."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from fm_core.path_measures import path_measures
from fm_core.sampling import SolverSetting, sample
from orchestrator.plan import plan_sweep
from orchestrator.rows import EvalRow
from orchestrator.training_loop import TrialParts
from orchestrator.validation import parse_sweep
from tests.test_likelihood_protocol import SWEEP as PROTOCOL_SWEEP

SETTINGS = [SolverSetting("euler", nfe_budget=8), SolverSetting("rk4", nfe_budget=20), SolverSetting.adaptive("dopri5", 1e-8)]


def _measure(field, x0, setting, t_span=(0.0, 1.0)):
    sol = sample(field, x0, setting, t_span, energy=True)
    return sol, path_measures(x0, sol.x, sol.energy, t_span[1] - t_span[0])


def _noise(n=16):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.label)
def test_the_straight_conditional_field_of_one_data_point_has_straightness_zero(float64, setting):
    # FM-OT's conditional field towards one point x1: psi_t(x0) = (1 - (1 - s) t) x0 + t x1, a straight line.
    x1, s = torch.tensor([2.0, -1.0]), 1e-4
    field = lambda t, x: (x1 - (1 - s) * x) / (1 - (1 - s) * t)
    x0 = _noise()
    sol, m = _measure(field, x0, setting)
    torch.testing.assert_close(sol.x, s * x0 + x1)
    assert float(m.straightness.abs().max()) < 1e-9
    torch.testing.assert_close(m.path_energy, (x1 - (1 - s) * x0).pow(2).sum(1))


@pytest.mark.parametrize(("setting", "straight", "energy"), [
    (SolverSetting("euler", nfe_budget=2), 0.25, 0.5),  # v = 0 at t = 0, a at t = 1/2: x1 - x0 = a / 2
    (SolverSetting("rk4", nfe_budget=4), 1 / 3, 4 / 3),  # exact for a quadratic integrand
    (SolverSetting.adaptive("dopri5", 1e-6), 1 / 3, 4 / 3),
], ids=["euler2", "rk4", "dopri5"])  # fmt: skip
def test_straightness_and_energy_match_a_hand_computation(float64, setting, straight, energy):
    # v(x, t) = 2 t a: x_t = x0 + t^2 a, so (x1 - x0) - v = (1 - 2t) a, whose squared norm integrates to |a|^2 / 3,
    # and |v|^2 to 4 |a|^2 / 3; Euler's two steps see v = 0 and v = a, each for half the time.
    a = torch.tensor([3.0, 4.0])
    field = lambda t, x: 2 * t * a.expand_as(x)
    _, m = _measure(field, _noise(4), setting)
    torch.testing.assert_close(m.straightness, torch.full((4,), straight * 25.0))
    torch.testing.assert_close(m.path_energy, torch.full((4,), energy * 25.0))


@pytest.mark.parametrize("t_max", [1.0, 0.5])
def test_path_energy_of_a_linear_field_is_its_closed_form(float64, t_max):
    # v = lam x: x_t = exp(lam t) x0, so the integral of |v|^2 over [0, T] is lam / 2 (exp(2 lam T) - 1) |x0|^2,
    # times T on the unit time scale; straightness subtracts |x_T - x0|^2 = (exp(lam T) - 1)^2 |x0|^2.
    lam, x0 = 0.7, _noise()
    _, m = _measure(lambda t, x: lam * x, x0, SolverSetting.adaptive("dopri5", 1e-10), (0.0, t_max))
    r2 = x0.pow(2).sum(1)
    energy = t_max * lam / 2 * (math.exp(2 * lam * t_max) - 1) * r2
    torch.testing.assert_close(m.path_energy, energy, rtol=1e-7, atol=0)
    torch.testing.assert_close(m.straightness, energy - (math.exp(lam * t_max) - 1) ** 2 * r2, rtol=1e-6, atol=0)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.label)
def test_measuring_the_energy_changes_neither_the_steps_nor_the_samples(setting):
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))
    torch.manual_seed(0)
    field = lambda t, x: 3 * net(torch.cat([x, t.expand(len(x), 1)], 1))
    x0 = _noise(64).float()
    plain = sample(field, x0, setting)
    measured = sample(field, x0, setting, energy=True)
    assert measured.nfe == plain.nfe
    torch.testing.assert_close(measured.x, plain.x, rtol=0, atol=1e-6)


#: test_likelihood_protocol's small sweep (euler at 4 NFE, dopri5 at 1e-3), without the likelihood.
SWEEP: dict[str, Any] = {**PROTOCOL_SWEEP, "eval": {"samples": 64, "likelihood_points": 0, "reference_tol": None}}


def _evaluate(eval_changes: dict[str, Any]) -> tuple[dict[str, EvalRow], TrialParts]:
    config = parse_sweep({**SWEEP, "eval": {**SWEEP["eval"], **eval_changes}})
    plan = plan_sweep(config)
    parts = TrialParts.build(config.for_training(plan.trainings[0]), plan.trainings[0])
    parts.trainer.train_until(config.train.steps)
    rows, _ = parts.evaluator.evaluate(plan.settings)
    assert [r.status for r in rows] == ["ok", "ok"], [r.error for r in rows]
    return {r.setting.label: r for r in rows}, parts


def test_every_sample_row_carries_straightness_and_path_energy_and_per_sample_nfe_where_asked():
    rows, parts = _evaluate({"per_sample_nfe": 8})
    euler, dopri = rows["euler_nfe4"], rows["dopri5_tol1e-03"]
    for row in (euler, dopri):
        assert 0 < row.straightness < row.path_energy, row
    # Euler's four steps: recomputed here by hand from the same noise and the trained field.
    draw_noise = torch.randn((64, 2), generator=torch.Generator().manual_seed(0)) * parts.state.path.prior_std
    field = parts.state.objective.vector_field(parts.state.evaluated_model)
    x, vs = draw_noise, []
    with torch.no_grad():
        for k in range(4):
            vs.append(field(torch.tensor(k / 4), x))
            x = x + vs[-1] / 4
    straight = sum(((x - draw_noise) - v).pow(2).sum(1) for v in vs) / 4
    assert euler.straightness == pytest.approx(float(straight.mean()), rel=1e-4)
    assert euler.path_energy == pytest.approx(float(sum(v.pow(2).sum(1) for v in vs).mean() / 4), rel=1e-4)
    # Per-sample NFE on the adaptive row only, beside the batch's; the samples solved alone land near the batch's.
    assert math.isnan(euler.nfe_sample_mean) and math.isnan(euler.per_sample_gap)
    assert dopri.nfe_sample_median <= dopri.nfe_sample_p90 and 0 < dopri.nfe_sample_mean
    assert dopri.per_sample_gap < 1e-2
    assert {"nfe", "nfe_sample_mean", "nfe_sample_median", "nfe_sample_p90", "straightness"} <= set(dopri.child_metrics())


def test_a_row_without_per_sample_solves_has_no_per_sample_values():
    rows, _ = _evaluate({})
    assert all(math.isnan(r.nfe_sample_mean) and math.isnan(r.per_sample_gap) for r in rows.values())
