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

An objective is one subclass of `Objective` with a `name`: it registers itself in `OBJECTIVES`, and what it
can do sits beside its name as class attributes (its table `label`, the path capabilities it `needs`, its
`default_times`), which validation, training and the tables read from the class. Like fm_core.paths this
module imports PyTorch at first use, so fm_core.names and the sweep validation read them without PyTorch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from fm_core.lazy import Registered, torch
from fm_core.paths import PATHS, AffinePath, _expand_like
from fm_core.time_sampling import TIME_SAMPLERS, TimeSampler, Uniform, make_time_sampler

if TYPE_CHECKING:
    from torch import Tensor, nn

VectorField = Callable[["Tensor", "Tensor"], "Tensor"]
"""A field called as f(t, x) (torchdiffeq's order) with a scalar t."""

#: Every objective by name, in the order they are defined (filled as each subclass is created).
OBJECTIVES: dict[str, type[Objective]] = {}
#: Why a path lacking a capability an objective needs cannot train it.
_WHY = {
    "score_field": "alpha_t is 0 at its noise end, where a score defines no probability-flow field",
    "likelihood_weighting": "it has no diffusion coefficient to weight the score loss by likelihood",
}


def _per_sample_mean(sq: Tensor) -> Tensor:
    return sq.reshape(sq.shape[0], -1).sum(dim=1) / sq[0].numel()


def _mse(pred: Tensor, target: Tensor) -> Tensor:
    """Batch mean of the per-sample mean squared error; every sample has the same size, so this is
    the plain mean, computed by one fused kernel (and one in backward) instead of five."""
    return torch.nn.functional.mse_loss(pred, target)


@dataclass(frozen=True)
class Objective(Registered, ABC):
    """A regression loss for the network and the recipe that turns it into an ODE field."""

    _registry = OBJECTIVES
    _family = "objectives"
    _called = "objective"

    path: AffinePath
    times: TimeSampler = field(default_factory=Uniform)  # how training draws t (fm_core.time_sampling)
    name: ClassVar[str] = "objective"
    #: Its name in tables' method labels (FM-OT, SM-VP).
    label: ClassVar[str] = "objective"
    #: The path capabilities (class attributes of fm_core.paths) it needs: the score objectives learn a score
    #: (or noise), which defines an ODE only where alpha_t > 0 (`score_field`).
    needs: ClassVar[tuple[str, ...]] = ()
    #: The time distribution (fm_core.time_sampling) it trains with unless `train.time_sampling` names another.
    default_times: ClassVar[str] = "uniform"

    @classmethod
    def learns_score(cls) -> bool:
        """Whether its network gives a score (and so a loss that likelihood-weighted times can weight)."""
        return "score_field" in cls.needs

    @classmethod
    def own_times_problem(cls, chosen: str) -> str | None:
        """Why it cannot train with `chosen` times whatever the path (None: it can)."""
        return None

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
    label: ClassVar[str] = "FM"

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

    needs: ClassVar[tuple[str, ...]] = ("score_field",)

    def score(self, model: nn.Module, x: Tensor, t: Tensor) -> Tensor:
        return model(x, t)

    def vector_field(self, model: nn.Module) -> VectorField:
        return lambda t, x: self.path.score_to_vector_field(x, self.score(model, x, t), t)


class ScoreMatching(_ScoreBased):
    """Denoising score matching with lambda(t) = sigma_t^2: ||sigma s + x0||^2."""

    name: ClassVar[str] = "sm"
    label: ClassVar[str] = "SM"

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
    label: ClassVar[str] = "ScoreFlow"
    #: It also weights its loss by the path's diffusion coefficient.
    needs: ClassVar[tuple[str, ...]] = ("score_field", "likelihood_weighting")
    default_times: ClassVar[str] = "likelihood"

    @classmethod
    def own_times_problem(cls, chosen: str) -> str | None:
        """ScoreFlow *is* score matching under likelihood-weighted times."""
        if chosen != cls.default_times:
            return f"objective '{cls.name}' is score matching with likelihood-weighted times: for '{chosen}' times train '{ScoreMatching.name}'"
        return None


class NoisePrediction(_ScoreBased):
    """DDPM's epsilon prediction: ||eps(x_t, t) - x0||^2, score = -eps / sigma_t."""

    name: ClassVar[str] = "ddpm"
    label: ClassVar[str] = "DDPM"

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


def objective_label(name: str) -> str:
    """An objective's name in tables (FM, SM, ScoreFlow, DDPM); an unknown name as it is."""
    cls = OBJECTIVES.get(name)
    return cls.label if cls is not None else name


def paths_for(objective: str) -> tuple[str, ...]:
    """The paths an objective can train on."""
    return tuple(p for p, cls in PATHS.items() if all(getattr(cls, need) for need in OBJECTIVES[objective].needs))


def path_objective_problem(path: str, objective: str) -> str | None:
    """Why `objective` cannot train on `path` (None: it can), read from the path's capabilities."""
    missing = [need for need in OBJECTIVES[objective].needs if not getattr(PATHS[path], need)]
    if not missing:
        return None
    return f"objective '{objective}' cannot train on path '{path}': {_WHY[missing[0]]} (it can on {', '.join(paths_for(objective))})"


def time_sampling_of(objective: str, kind: str | None) -> str:
    """The time distribution an objective trains with: `kind`, else its own default."""
    return kind or OBJECTIVES[objective].default_times


def time_sampling_problem(path: str, objective: str, kind: str | None) -> str | None:
    """Why these training times do not fit the objective on this path (None: they do)."""
    chosen = time_sampling_of(objective, kind)
    own = OBJECTIVES[objective].own_times_problem(chosen)
    if own:
        return own
    if TIME_SAMPLERS[chosen].needs_likelihood_weighting:
        if not OBJECTIVES[objective].learns_score():
            return f"time sampling '{chosen}' weights a score loss; objective '{objective}' has none"
        if not PATHS[path].likelihood_weighting:
            return f"time sampling '{chosen}' needs a diffusion coefficient, which path '{path}' has not"
    return None


def make_objective(name: str, path: AffinePath, times: TimeSampler | None = None) -> Objective:
    """Build an objective by name on a path, training with `times` (default: the objective's own); what the
    path can do (fm_core.paths) decides which objectives and times fit it."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective '{name}'; choose one of {', '.join(OBJECTIVES)}")
    known = path.name in PATHS
    problem = path_objective_problem(path.name, name) if known else None
    times = times if times is not None else make_time_sampler(time_sampling_of(name, None))
    problem = problem or (time_sampling_problem(path.name, name, times.kind) if known else None)
    if problem:
        raise ValueError(problem)
    return OBJECTIVES[name](path, times)
