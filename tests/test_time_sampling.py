"""Training times: uniform (the paper's), logit-normal, and ScoreFlow's likelihood weighting, as one option."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from fm_core.objectives import make_objective
from fm_core.paths import OTPath, VPPath, make_path
from fm_core.time_sampling import TIME_SAMPLERS, LikelihoodWeighted, LogitNormal, Uniform, make_time_sampler
from orchestrator.config_errors import ConfigError
from orchestrator.validation import parse_sweep

BASE = {"name": "times", "dataset": {"name": "moons"}, "train": {"steps": 10, "batch_size": 32},
        "grid": {"path": ["vp"], "objective": ["fm"], "solver": ["euler"], "nfe": [4]}}  # fmt: skip


@pytest.mark.parametrize(("loc", "scale", "path"), [(0.0, 1.0, OTPath()), (-0.5, 0.7, OTPath()), (0.3, 1.6, VPPath())])
def test_logit_normal_times_pass_a_ks_test_against_their_cdf(loc, scale, path):
    sampler = LogitNormal(loc, scale)
    t, weight = sampler.sample(path, 20_000, generator=torch.Generator().manual_seed(0))
    assert weight is None and 0 < float(t.min()) and float(t.max()) < path.t_max
    cdf = lambda x: sampler.cdf(torch.as_tensor(x, dtype=torch.float64), path.t_max).numpy()  # noqa: E731
    assert stats.kstest(t.double().numpy(), cdf).pvalue > 0.01
    # and the CDF is the logit-normal's: the normal CDF of logit(t / t_max)
    u = 0.3
    expected = stats.norm.cdf((math.log(u / (1 - u)) - loc) / scale)
    assert math.isclose(float(sampler.cdf(torch.tensor(u * path.t_max, dtype=torch.float64), path.t_max)), expected, rel_tol=1e-9)


def test_uniform_and_likelihood_times_are_the_paths_own_samplers():
    vp = VPPath()
    t, w = Uniform().sample(vp, 100, generator=torch.Generator().manual_seed(1))
    assert w is None and torch.equal(t, vp.sample_t(100, generator=torch.Generator().manual_seed(1)))
    t, w = LikelihoodWeighted().sample(vp, 100, generator=torch.Generator().manual_seed(1))
    t2, w2 = vp.likelihood_weighted_t(100, generator=torch.Generator().manual_seed(1))
    assert torch.equal(t, t2) and torch.equal(w, w2)
    assert set(TIME_SAMPLERS) == {"uniform", "logit_normal", "likelihood"}


def test_the_flow_matching_loss_trains_at_the_sampled_times(float64):
    """A logit-normal of tiny scale puts every t at 1/2: the loss is then the one at t = 1/2 exactly."""
    path = make_path("cosine")
    model = torch.nn.Linear(2, 2).double()
    net = lambda x, t: model(x)  # noqa: E731
    x0, x1 = torch.randn(64, 2), torch.randn(64, 2)
    objective = make_objective("fm", path, LogitNormal(0.0, 1e-9))
    loss = objective.loss(net, x0, x1, torch.Generator().manual_seed(2))
    half = torch.full((64,), 0.5)
    x_t, target = path.sample(x0, x1, half)
    torch.testing.assert_close(loss, ((model(x_t) - target) ** 2).mean())
    assert make_objective("scoreflow", VPPath()).times == LikelihoodWeighted()
    assert make_objective("sm", VPPath()).times == Uniform()


def test_times_that_do_not_fit_the_objective_are_refused_in_fm_core():
    with pytest.raises(ValueError, match="'scoreflow' is score matching with likelihood-weighted times.*'sm'"):
        make_objective("scoreflow", VPPath(), LogitNormal())
    with pytest.raises(ValueError, match="time sampling 'likelihood' weights a score loss; objective 'fm' has none"):
        make_objective("fm", VPPath(), LikelihoodWeighted())
    make_objective("sm", VPPath(), LikelihoodWeighted())  # ScoreFlow by another name: allowed
    with pytest.raises(ValueError, match=r"option .scale. must be in \(0, 10\]"):
        make_time_sampler("logit_normal", scale=0.0)
    with pytest.raises(ValueError, match="has no option 'shift'"):
        make_time_sampler("uniform", shift=1.0)


def _refused(train: dict, grid: dict | None = None) -> ConfigError:
    data = {**BASE, "train": {**BASE["train"], **train}, "grid": {**BASE["grid"], **(grid or {})}}
    with pytest.raises(ConfigError) as caught:
        parse_sweep(data, "times.yaml")
    return caught.value


def test_the_sweep_file_names_the_times_and_their_problems():
    config = parse_sweep({**BASE, "train": {**BASE["train"], "time_sampling": {"kind": "logit_normal", "loc": 0.5}}}, "t.yaml")
    assert config.train.time_sampling.options == {"loc": 0.5}
    err = _refused({"time_sampling": {"kind": "logit_normal", "shift": 1}})
    assert err.key == "train.time_sampling.shift" and "its options: loc, scale" in str(err)
    err = _refused({"time_sampling": {"kind": "logit_normal", "scale": -1}})
    assert err.key == "train.time_sampling.scale" and "must be in (0, 10]" in str(err)
    err = _refused({"time_sampling": {"kind": "logit_normal", "scale": "wide"}})
    assert err.key == "train.time_sampling.scale"
    err = _refused({"time_sampling": {"kind": "beta"}})
    assert err.key == "train.time_sampling.kind" and "uniform" in str(err)
    err = _refused({"time_sampling": {"kind": "likelihood"}})
    assert err.key == "train.time_sampling.kind" and "objective 'fm' has none" in str(err)
    err = _refused({"time_sampling": {"kind": "uniform"}}, {"objective": ["scoreflow"]})
    assert err.key == "train.time_sampling.kind" and "train 'sm'" in str(err)
    parse_sweep({**BASE, "train": {**BASE["train"], "time_sampling": {"kind": "likelihood"}}, "grid": {**BASE["grid"], "objective": ["sm"]}}, "t.yaml")


def test_a_time_sampling_axis_skips_or_refuses_what_does_not_fit_by_the_capabilities():
    from orchestrator.plan import count_trainings, plan_sweep, time_kind

    grid = {"path": ["vp", "cosine"], "objective": ["fm", "sm"], "solver": ["euler"], "nfe": [4],
            "train": {"time_sampling": [{"kind": "uniform"}, {"kind": "likelihood"}]}}  # fmt: skip
    config = parse_sweep({**BASE, "grid": grid, "invalid": "skip"}, "t.yaml")
    plan = plan_sweep(config)
    assert [(k.path, k.objective, time_kind(config, k.train)) for k in plan.trainings] == [
        ("vp", "fm", "uniform"), ("vp", "sm", "uniform"), ("vp", "sm", "likelihood"), ("cosine", "fm", "uniform"),
    ]  # fmt: skip
    assert count_trainings(config) == len(plan.trainings) == 4 and plan.skipped == [("cosine", "sm")]
    with pytest.raises(ConfigError) as caught:  # without `invalid: skip`, the first misfit is named
        parse_sweep({**BASE, "grid": grid}, "t.yaml")
    assert caught.value.key == "grid.train.time_sampling" and "objective 'fm' has none" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_sweep({**BASE, "grid": {**grid, "path": ["cosine"], "objective": ["sm"], "train": {"time_sampling": [{"kind": "uniform"}]}}}, "t.yaml")
    assert caught.value.key == "grid" and "'sm' cannot train on path 'cosine'" in str(caught.value)
