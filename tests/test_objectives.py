"""Each objective is minimised by the exact marginal quantity, and turns it back into the true field."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fm_core.names import OBJECTIVE_NAMES
from fm_core.objectives import make_objective
from fm_core.paths import _expand_like, make_path
from fm_core.sampling import SolverSetting, sample


class _Exact(nn.Module):
    """Wraps a closed-form function of (x, t) as a 'network', optionally perturbed."""

    def __init__(self, fn, offset: float = 0.0) -> None:
        super().__init__()
        self.fn, self.offset = fn, offset

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.fn(x, t) + self.offset


def _exact_network(objective_name: str, path, data):
    """What the network should converge to under each objective."""
    if objective_name == "fm":
        field = data.vector_field(path)
        return lambda x, t: field(t, x)
    score = data.score(path)
    if objective_name in ("sm", "scoreflow"):
        return lambda x, t: score(t, x)

    def noise(x, t):  # ddpm: eps = -sigma * score
        _, sigma = path.alpha_sigma(torch.as_tensor(t, dtype=x.dtype))
        return -_expand_like(sigma, x) * score(t, x)

    return noise


CASES = [("ot", "fm"), ("vp", "fm"), ("ve", "fm"), ("vp", "sm"), ("vp", "scoreflow"), ("vp", "ddpm"), ("ve", "sm")]


@pytest.mark.parametrize(("path_name", "objective_name"), CASES)
def test_exact_marginal_network_has_lower_loss_than_a_perturbed_one(gaussian_2d, float64, path_name, objective_name):
    path = make_path(path_name)
    objective = make_objective(objective_name, path)
    fn = _exact_network(objective_name, path, gaussian_2d)

    def loss(offset: float) -> float:
        g = torch.Generator().manual_seed(0)
        x0 = torch.randn(20000, 2, generator=g)
        x1 = gaussian_2d.mu + gaussian_2d.std * torch.randn(20000, 2, generator=g)
        return float(objective.loss(_Exact(fn, offset), x0, x1, generator=g))

    exact = loss(0.0)
    assert exact < loss(0.05) and exact < loss(-0.05)


@pytest.mark.parametrize(("path_name", "objective_name"), [c for c in CASES if c[1] != "fm"])
def test_score_objectives_turn_the_exact_network_into_the_true_field(gaussian_2d, float64, path_name, objective_name):
    path = make_path(path_name)
    objective = make_objective(objective_name, path)
    field = objective.vector_field(_Exact(_exact_network(objective_name, path, gaussian_2d)))
    truth = gaussian_2d.vector_field(path)
    x = torch.randn(64, 2, dtype=torch.float64)
    for t in (0.1, 0.5, 0.9):
        tt = torch.tensor(t, dtype=torch.float64)
        torch.testing.assert_close(field(tt, x), truth(tt, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", ["ot", "cosine", "poly", "linear_vp"])
def test_score_objectives_are_rejected_where_alpha_is_zero_at_the_noise_end(path):
    for name in ("sm", "scoreflow", "ddpm"):
        with pytest.raises(ValueError, match=f"cannot train on path '{path}': alpha_t is 0 at its noise end.*vp, ve"):
            make_objective(name, make_path(path))
    with pytest.raises(ValueError, match="unknown objective"):
        make_objective("gan", make_path("vp"))
    assert set(OBJECTIVE_NAMES) == {"fm", "sm", "scoreflow", "ddpm"}


def test_fm_field_samples_through_the_solver(gaussian_2d, float64):
    path = make_path("ot", sigma_min=0.0)
    field = make_objective("fm", path).vector_field(_Exact(_exact_network("fm", path, gaussian_2d)))
    x0 = torch.randn(512, 2, dtype=torch.float64)
    sol = sample(field, x0, SolverSetting.adaptive("dopri5", 1e-8), (0.0, path.t_max))
    torch.testing.assert_close(sol.x, gaussian_2d.mu + gaussian_2d.std * x0, atol=1e-5, rtol=0)


def test_an_objective_is_one_class_named_with_its_capabilities_read_without_torch():
    """names, labels, what each needs of a path and its times come from the classes (fm_core.objectives), and
    reading them imports no PyTorch, as for paths."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from fm_core.names import OBJECTIVE_NAMES\n"
        "from fm_core.objectives import path_objective_problem, time_sampling_of\n"
        "from fm_core.likelihood import DIVERGENCES, PER_SAMPLE_SOLVER, PROBES\n"
        "from orchestrator.tables import method_label\n"
        "assert OBJECTIVE_NAMES == ('fm', 'sm', 'scoreflow', 'ddpm'), OBJECTIVE_NAMES\n"
        "assert [method_label('vp', o, 'independent') for o in OBJECTIVE_NAMES] == ['FM-VP', 'SM-VP', 'ScoreFlow-VP', 'DDPM-VP']\n"
        "assert time_sampling_of('scoreflow', None) == 'likelihood' and path_objective_problem('vp', 'ddpm') is None\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]


def test_a_new_objective_class_registers_validates_and_labels_itself():
    from fm_core.objectives import OBJECTIVES, FlowMatching, path_objective_problem, time_sampling_of
    from orchestrator.tables import method_label

    class Rectified(FlowMatching):
        name = "rectified_test"
        label = "RF"
        needs = ("score_field",)
        default_times = "logit_normal"

    try:
        assert OBJECTIVES["rectified_test"] is Rectified and method_label("ot", "rectified_test", "independent") == "RF-OT"
        assert time_sampling_of("rectified_test", None) == "logit_normal"
        assert "cannot train on path 'ot'" in path_objective_problem("ot", "rectified_test")
        objective = make_objective("rectified_test", make_path("vp"))
        assert isinstance(objective, Rectified) and objective.times.kind == "logit_normal"
    finally:
        del OBJECTIVES["rectified_test"]
