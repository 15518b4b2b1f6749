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
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fm_core.names import OBJECTIVE_NAMES, SCORE_OBJECTIVES
from fm_core.paths import AffinePath, _expand_like

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
        t = self.path.sample_t(x1.shape[0], device=x1.device, generator=generator).to(x1.dtype)
        x_t, target = self.path.sample(x0, x1, t)
        return _mse(model(x_t, t), target)

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

    def _times(self, n: int, device: torch.device, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        return self.path.sample_t(n, device=device, generator=generator), None

    def loss(self, model: nn.Module, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None) -> Tensor:
        t, weight = self._times(x1.shape[0], x1.device, generator)
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

    def _times(self, n: int, device: torch.device, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        return self.path.likelihood_weighted_t(n, device=device, generator=generator)


class NoisePrediction(_ScoreBased):
    """DDPM's epsilon prediction: ||eps(x_t, t) - x0||^2, score = -eps / sigma_t."""

    name: ClassVar[str] = "ddpm"

    def loss(self, model: nn.Module, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None) -> Tensor:
        t = self.path.sample_t(x1.shape[0], device=x1.device, generator=generator).to(x1.dtype)
        x_t, _ = self.path.sample(x0, x1, t)
        return _mse(model(x_t, t), x0)

    def score(self, model: nn.Module, x: Tensor, t: Tensor) -> Tensor:
        _, sigma = self.path.alpha_sigma(torch.as_tensor(t, dtype=x.dtype, device=x.device))
        return -model(x, t) / _expand_like(sigma, x)


def make_objective(name: str, path: AffinePath) -> Objective:
    """Build an objective by name; score objectives need a diffusion path (vp or ve)."""
    classes: dict[str, type[Objective]] = {
        "fm": FlowMatching,
        "sm": ScoreMatching,
        "scoreflow": ScoreFlow,
        "ddpm": NoisePrediction,
    }
    if name not in classes:
        raise ValueError(f"unknown objective '{name}'; choose one of {', '.join(OBJECTIVE_NAMES)}")
    if name in SCORE_OBJECTIVES and path.name == "ot":
        raise ValueError(
            f"objective '{name}' learns a score and needs a diffusion path (vp or ve); "
            "the OT path has no score-based probability-flow ODE at t = 0"
        )
    return classes[name](path)
