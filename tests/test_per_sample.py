"""Per-sample NFE: each sample solved alone under its own step control (torchdiffeq, one sample per solve)."""

from __future__ import annotations

import pytest
import torch

from fm_core.per_sample import PerSampleSolve, solve_each
from fm_core.sampling import SolverSetting, sample

TOL = 1e-5


def _field():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)).double()
    return lambda t, x: 4 * net(torch.cat([x, t.expand(len(x), 1)], 1))


def _noise(n: int) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("solver", ["dopri5", "bosh3"])
def test_a_batch_of_one_reproduces_the_batched_nfe_and_samples(solver):
    field, setting = _field(), SolverSetting.adaptive(solver, TOL)
    for x0 in _noise(3).split(1):
        alone = solve_each(lambda i: field, x0, setting, (0.0, 1.0))
        batched = sample(field, x0, setting)
        assert alone.nfe.tolist() == [batched.nfe]
        torch.testing.assert_close(alone.x, batched.x, rtol=0, atol=0)


def test_samples_solved_alone_agree_with_the_batched_solve_within_the_tolerance_and_have_their_own_nfe():
    field, setting = _field(), SolverSetting.adaptive("dopri5", TOL)
    x0 = _noise(32)
    alone = solve_each(lambda i: field, x0, setting, (0.0, 1.0))
    batched = sample(field, x0, setting)
    gap = (alone.x - batched.x).abs().max()
    assert float(gap) < 20 * TOL * float(batched.x.abs().max()), gap
    assert len(set(alone.nfe.tolist())) > 1  # the samples differ in difficulty
    summary = alone.summary()
    assert summary["mean"] == pytest.approx(float(alone.nfe.double().mean()))
    assert min(alone.nfe.tolist()) <= summary["median"] <= summary["p90"] <= max(alone.nfe.tolist())


def test_the_batch_nfe_depends_on_the_company_a_sample_keeps_and_its_own_does_not():
    field, setting = _field(), SolverSetting.adaptive("dopri5", TOL)
    x0 = _noise(32)
    own = solve_each(lambda i: field, x0, setting, (0.0, 1.0)).nfe
    easy, hard = int(own.argmin()), int(own.argmax())
    assert own[easy] < own[hard]
    assert sample(field, x0[[easy]], setting).nfe == own[easy]
    assert sample(field, x0[[easy, hard]], setting).nfe > own[easy]  # the hard one's company costs the easy one steps


def test_the_nfe_distribution_is_the_mean_median_and_90th_percentile():
    solved = PerSampleSolve(nfe=torch.tensor([14, 20, 20, 26, 26, 26, 32, 32, 38, 50]), x=torch.zeros(10, 2))
    assert solved.summary() == pytest.approx({"mean": 28.4, "median": 26.0, "p90": 39.2})
