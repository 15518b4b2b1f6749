"""Training objectives on a shared network, and the vector field each one samples with.

Flow matching regresses the network onto the conditional target of a path.  The paper's
diffusion baselines regress it onto a score or a noise; for sampling and likelihood every
objective turns its network into a vector field (the probability-flow ODE for score models),
so all of them are compared with the same solvers on the same footing.

* ``fm``        ||v(x_t, t) - (alpha' x1 + sigma' x0)||^2                       (Eq. 14)
* ``sm``        sigma_t^2 ||s(x_t, t) + x0 / sigma_t||^2, network = score          (lambda = sigma^2)
* ``scoreflow`` g(t)^2 ||s(x_t, t) + x0 / sigma_t||^2, likelihood weighting, with times drawn
                from q ~ g^2 / sigma^2 (importance sampling) to tame the variance near the data
* ``ddpm``      ||eps(x_t, t) - x0||^2, network = noise, score = -eps / sigma_t
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fm_core.names import OBJECTIVE_NAMES, path_objective_problem, time_sampling_of, time_sampling_problem
from fm_core.paths import PATHS, AffinePath, _expand_like
from fm_core.time_sampling import TimeSampler, Uniform, make_time_sampler

VectorField = Callable[[Tensor, Tensor], Tensor]
"""A field called as f(t, x) (torchdiffeq's order) with a scalar t."""


def _per_sample_mean(sq: Tensor) -> Tensor:
    return sq.reshape(sq.shape[0], -1).sum(dim=1) / sq[0].numel()


def _mse(pred: Tensor, target: Tensor) -> Tensor:
    """Batch mean of the per-sample mean squared error; every sample has the same size, so this is
    the plain mean, computed by one fused kernel (and one in backward) instead of five."""
    return F.mse_loss(pred, target)


@dataclass(frozen=True)
class Objective(ABC):
    """A regression loss for the network and the recipe that turns it into an ODE field."""

    path: AffinePath
    times: TimeSampler = field(default_factory=Uniform)  # how training draws t (fm_core.time_sampling)
    name: ClassVar[str] = "objective"

    @abstractmethod
    def loss(
        self, model: nn.Module, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Scalar loss on a batch of noise x0 paired with data x1."""

    @abstractmethod
    def vector_field(self, model: nn.Module) -> VectorField:
        """The sampling field v(t, x) defined by the network under this objective."""


class FlowMatching(Objective):
    """Conditional flow matching: the network is the vector field itself."""

    name: ClassVar[str] = "fm"

    def loss(self, model: nn.Module, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None) -> Tensor:
        t, weight = self.times.sample(self.path, x1.shape[0], device=x1.device, generator=generator)
        t = t.to(x1.dtype)
        x_t, target = self.path.sample(x0, x1, t)
        if weight is None:
            return _mse(model(x_t, t), target)
        return (_per_sample_mean((model(x_t, t) - target) ** 2) * weight.to(x1.dtype)).mean()

    def vector_field(self, model: nn.Module) -> VectorField:
        return lambda t, x: model(x, t)


class _ScoreBased(Objective):
    """Shared pieces of the score and noise objectives: the PF-ODE field from a score."""

    def score(self, model: nn.Module, x: Tensor, t: Tensor) -> Tensor:
        return model(x, t)

    def vector_field(self, model: nn.Module) -> VectorField:
        return lambda t, x: self.path.score_to_vector_field(x, self.score(model, x, t), t)


class ScoreMatching(_ScoreBased):
    """Denoising score matching with lambda(t) = sigma_t^2: ||sigma s + x0||^2."""

    name: ClassVar[str] = "sm"

    def loss(self, model: nn.Module, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None) -> Tensor:
        t, weight = self.times.sample(self.path, x1.shape[0], device=x1.device, generator=generator)
        t = t.to(x1.dtype)
        x_t, _ = self.path.sample(x0, x1, t)
        _, sigma = self.path.alpha_sigma(t)
        per_sample = _per_sample_mean((_expand_like(sigma, x1) * model(x_t, t) + x0) ** 2)
        if weight is not None:
            per_sample = per_sample * weight.to(per_sample)
        return per_sample.mean()


class ScoreFlow(ScoreMatching):
    """Likelihood-weighted score matching (Song et al., 2021), lambda(t) = g(t)^2.

    g^2 ||s + x0/sigma||^2 = (g^2 / sigma^2) ||sigma s + x0||^2: drawing t from q ~ g^2 / sigma^2
    leaves the constant weight Z, so it is the SM loss under importance-sampled times.
    """

    name: ClassVar[str] = "scoreflow"


class NoisePrediction(_ScoreBased):
    """DDPM's epsilon prediction: ||eps(x_t, t) - x0||^2, score = -eps / sigma_t."""

    name: ClassVar[str] = "ddpm"

    def loss(self, model: nn.Module, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None) -> Tensor:
        t, weight = self.times.sample(self.path, x1.shape[0], device=x1.device, generator=generator)
        t = t.to(x1.dtype)
        x_t, _ = self.path.sample(x0, x1, t)
        if weight is None:
            return _mse(model(x_t, t), x0)
        return (_per_sample_mean((model(x_t, t) - x0) ** 2) * weight.to(x1.dtype)).mean()

    def score(self, model: nn.Module, x: Tensor, t: Tensor) -> Tensor:
        _, sigma = self.path.alpha_sigma(torch.as_tensor(t, dtype=x.dtype, device=x.device))
        return -model(x, t) / _expand_like(sigma, x)


def make_objective(name: str, path: AffinePath, times: TimeSampler | None = None) -> Objective:
    """Build an objective by name on a path, training with `times` (default: the objective's own); what the
    path can do (fm_core.paths) decides which objectives and times fit it."""
    classes: dict[str, type[Objective]] = {
        "fm": FlowMatching,
        "sm": ScoreMatching,
        "scoreflow": ScoreFlow,
        "ddpm": NoisePrediction,
    }
    if name not in classes:
        raise ValueError(f"unknown objective '{name}'; choose one of {', '.join(OBJECTIVE_NAMES)}")
    known = path.name in PATHS
    problem = path_objective_problem(path.name, name) if known else None
    times = times if times is not None else make_time_sampler(time_sampling_of(name, None))
    problem = problem or (time_sampling_problem(path.name, name, times.kind) if known else None)
    if problem:
        raise ValueError(problem)
    return classes[name](path, times)
