"""Paths: targets are the time derivative of their flows, ends are safe, samplers match densities."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.func import jvp

from fm_core.analytic import GaussianData
from fm_core.paths import PATHS as SCHEDULES
from fm_core.paths import CosinePath, LinearVPPath, OTPath, PolyPath, VEPath, VPPath, make_path

REPO = Path(__file__).resolve().parent.parent
PATHS = [OTPath(0.0), OTPath(1e-4), VPPath(), VEPath(sigma_min=0.01, sigma_max=5.0), CosinePath(), PolyPath(3.0),
         PolyPath(1.5), LinearVPPath()]  # fmt: skip


def test_every_schedule_is_tested():
    assert {type(p) for p in PATHS} == set(SCHEDULES.values())


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


@pytest.mark.parametrize("path", [VPPath(), VEPath(), LinearVPPath()], ids=repr)
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



def test_make_path_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="unknown path 'foo'.*ot, vp, ve, cosine, poly, linear_vp"):
        make_path("foo")
    assert make_path("ot", sigma_min=0.1).sigma_min == 0.1
    with pytest.raises(ValueError, match="path 'cosine' has no option 'sigma_min'"):
        make_path("cosine", sigma_min=0.1)
    with pytest.raises(ValueError, match=r"option 'n' must be in \(0, 100\], got 0.0"):
        make_path("poly", n=0.0)


def test_every_option_of_a_schedule_or_time_sampler_declares_a_range_holding_its_default():
    """Validation reads the ranges (a value outside is refused naming its key); an option without one is
    refused when set, telling the class's author to declare it."""
    from dataclasses import fields

    from fm_core.lazy import Range, option_problem
    from fm_core.time_sampling import TIME_SAMPLERS

    for cls in [*SCHEDULES.values(), *TIME_SAMPLERS.values()]:
        for f in fields(cls):
            bounds = f.metadata.get("range")
            assert isinstance(bounds, Range) and bounds.holds(f.default), (cls.__name__, f.name)

    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Bare:
        k: float = 1.0

    assert option_problem(Bare, {"k": 2.0}, "path 'bare'") == ("k", "path 'bare': option 'k' declares no range "
                                                                     "(write it with fm_core.lazy.option(default, low, high))")


def _posterior_mean(data: GaussianData, path, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """E[x1 | x_t = x] for Gaussian data, by Gaussian conditioning (independent of the marginal-field formula)."""
    alpha, sigma = path.alpha_sigma(t)
    var = alpha**2 * data.std**2 + sigma**2
    return data.mu + alpha * data.std**2 / var * (x - alpha * data.mu)


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_the_marginal_field_of_gaussian_data_is_the_posterior_mean_of_the_conditional_field(path, float64):
    """v_t(x) = E[u_t(x | x1) | x_t = x] (the paper's Eq. 8): the closed-form marginal field of every schedule
    against the conditional field at the posterior mean of x1 (u is affine in x1)."""
    data = GaussianData(torch.tensor([0.7, -1.2]), 0.6)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(4)) * 1.5
    for t in (0.05, 0.3, 0.6, 0.9, 0.99 * path.t_max):
        tt = torch.tensor(t)
        expected = path.conditional_vector_field(x, _posterior_mean(data, path, tt, x), tt)
        torch.testing.assert_close(data.vector_field(path)(tt, x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_the_score_to_field_conversion_is_exact_for_gaussian_data(path, float64):
    """Where alpha_t > 0 the probability-flow field from the exact score is the exact marginal field; the paths
    whose alpha_t > 0 everywhere (score_field) hold it at the noise end too."""
    data = GaussianData(torch.tensor([0.7, -1.2]), 0.6)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(5))
    times = [0.1, 0.5, 0.9 * path.t_max] + ([0.0] if path.score_field else [])
    for t in times:
        tt = torch.tensor(t)
        converted = path.score_to_vector_field(x, data.score(path)(tt, x), tt)
        torch.testing.assert_close(converted, data.vector_field(path)(tt, x), rtol=1e-8, atol=1e-8)
    if not path.score_field:  # why a score cannot define its field at t = 0
        assert float(path.alpha_sigma(torch.tensor(0.0))[0]) == 0.0


def test_the_new_schedules_have_their_published_forms(float64):
    t = torch.linspace(0.0, 1.0, 11)
    a, s = CosinePath().alpha_sigma(t)
    torch.testing.assert_close(a, torch.sin(math.pi * t / 2))
    torch.testing.assert_close(s, torch.cos(math.pi * t / 2))
    a, s = PolyPath(3.0).alpha_sigma(t)
    torch.testing.assert_close(a, t**3)
    torch.testing.assert_close(s, 1 - t**3)
    linear = LinearVPPath()
    inside = t[t <= linear.t_max]
    a, s = linear.alpha_sigma(inside)
    torch.testing.assert_close(a, inside)
    torch.testing.assert_close(s, torch.sqrt(1 - inside**2))
    assert math.isclose(linear.prior_std, 1.0) and math.isclose(CosinePath().prior_std, 1.0)


NEW_SCHEDULE = '''
import math
from dataclasses import dataclass
from typing import ClassVar

from fm_core.lazy import option
from fm_core.paths import AffinePath, torch


@dataclass(frozen=True)
class SigmoidPath(AffinePath):
    """Written only here: alpha_t = sigmoid(k (t - 1/2)) rescaled onto [0, 1], sigma_t = 1 - alpha_t."""

    k: float = option(6.0, 0.0, 50.0, open_low=True)
    name: ClassVar[str] = "sigmoid"

    def _ends(self):
        return 1 / (1 + math.exp(self.k / 2)), 1 / (1 + math.exp(-self.k / 2))

    def alpha_sigma(self, t):
        lo, hi = self._ends()
        a = (torch.sigmoid(self.k * (t - 0.5)) - lo) / (hi - lo)
        return a, 1 - a

    def d_alpha_sigma(self, t):
        lo, hi = self._ends()
        s = torch.sigmoid(self.k * (t - 0.5))
        d = self.k * s * (1 - s) / (hi - lo)
        return d, -d


from orchestrator.config_errors import ConfigError
from orchestrator.validation import parse_sweep
from orchestrator.plan import plan_sweep
from orchestrator.training_loop import TrialParts

base = {"name": "new", "dataset": {"name": "moons"}, "model": {"kind": "mlp", "hidden": 16, "depth": 2},
        "train": {"steps": 30, "batch_size": 64, "path_options": {"sigmoid": {"k": 4.0}}},
        "eval": {"samples": 64, "likelihood_points": 8, "reference_tol": None},
        "grid": {"path": ["sigmoid"], "solver": ["euler"], "nfe": [4]}}
config = parse_sweep(base, "new.yaml")
try:
    parse_sweep({**base, "grid": {**base["grid"], "objective": ["sm"]}}, "new.yaml")
except ConfigError as err:
    print("refused:", err)
key = plan_sweep(config).trainings[0]
runner = TrialParts.build(config.for_training(key), key)
assert runner.state.path.k == 4.0
runner.trainer.train_until(30)
rows, _ = runner.evaluator.evaluate(plan_sweep(config).settings)
print("trained:", runner.state.step, rows[0].status, rows[0].nfe, math.isfinite(rows[0].nll))
'''


def test_a_new_schedule_is_one_class_in_the_path_module():
    """Defined before anything reads the schedules (as a class in fm_core/paths.py is), a schedule is accepted
    by the sweep validation with its options, refused for the score objectives by its capabilities, trained
    and evaluated. And the schedules fm_core/paths.py defines are named nowhere else in fm_core or the
    orchestrator: a new schedule touches the path module and its test only."""
    done = subprocess.run([sys.executable, "-c", NEW_SCHEDULE], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "objective 'sm' cannot train on path 'sigmoid': alpha_t is 0 at its noise end" in done.stdout, done.stdout
    assert "trained: 30 ok 4 True" in done.stdout, done.stdout
    names = set(SCHEDULES) - {"poly"}  # "poly" is also a learning-rate schedule's name
    for folder in ("fm_core", "orchestrator"):
        for file in (REPO / folder).rglob("*.py"):
            if file.name == "paths.py":
                continue
            constants = [n.value for n in ast.walk(ast.parse(file.read_text())) if isinstance(n, ast.Constant)]
            named = sorted(set(constants) & names)
            if file.name == "schema.py":  # the grid's default path, the paper's: grid.path = ("ot",)
                named = [n for n in named if n != "ot" or constants.count("ot") > 1]
            assert not named, f"{file} names the schedules {named}"
