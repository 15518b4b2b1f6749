"""How training draws its times t: one class per distribution, chosen by `train.time_sampling.kind`.

* `uniform` on [0, t_max]: the paper's.
* `logit_normal` (loc m, scale s): t = sigmoid(m + s z) with z ~ N(0, 1), scaled onto [0, t_max]; it puts more
  weight on the middle of the path (Esser et al. 2024, the rectified-flow study behind Stable Diffusion 3).
* `likelihood`: times from q ~ g(t)^2 / sigma_t^2 with the importance weight that makes the score loss the
  likelihood-weighted one (Song et al. 2021): the ScoreFlow objective. It needs a path with a diffusion
  coefficient (`likelihood_weighting`) and a score objective.

A sampler returns the times and, where it reweights the loss, a per-sample weight (None: unweighted). Like
fm_core.paths this module imports PyTorch at first use only, so validation reads the kinds without it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from fm_core.paths import AffinePath  # noqa: F401 - the type its samplers draw times on

if TYPE_CHECKING:
    from torch import Generator, Tensor

from fm_core.lazy import Registered, option, option_problem, torch  # noqa: F401 - torch: imported at first use

#: Every time distribution by its kind, as each class is defined.
TIME_SAMPLERS: dict[str, type[TimeSampler]] = {}


class TimeSampler(Registered, ABC):
    """A distribution of training times on a path's [0, t_max]."""

    _registry = TIME_SAMPLERS
    _family = "time samplers"
    _called = "time sampling"
    _name_attribute = "kind"

    kind: ClassVar[str] = "time_sampler"
    #: Whether the sampler needs the path's diffusion coefficient (and so a score objective).
    needs_likelihood_weighting: ClassVar[bool] = False

    @abstractmethod
    def sample(self, path: AffinePath, n: int, device: Any = "cpu", generator: Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """n times on [0, path.t_max] and their loss weights (None: all 1)."""


@dataclass(frozen=True)
class Uniform(TimeSampler):
    kind: ClassVar[str] = "uniform"

    def sample(self, path: AffinePath, n: int, device: Any = "cpu", generator: Generator | None = None) -> tuple[Tensor, Tensor | None]:
        return path.sample_t(n, device=device, generator=generator), None


@dataclass(frozen=True)
class LogitNormal(TimeSampler):
    loc: float = option(0.0, -10.0, 10.0)
    scale: float = option(1.0, 0.0, 10.0, open_low=True)
    kind: ClassVar[str] = "logit_normal"

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"logit_normal: scale must be > 0, got {self.scale}")

    def sample(self, path: AffinePath, n: int, device: Any = "cpu", generator: Generator | None = None) -> tuple[Tensor, Tensor | None]:
        z = torch.randn(n, device=device, generator=generator)
        return torch.sigmoid(self.loc + self.scale * z) * path.t_max, None

    def cdf(self, t: Tensor, t_max: float = 1.0) -> Tensor:
        """P(T <= t): the normal CDF of logit(t / t_max), for tests and plots."""
        u = (t / t_max).clamp(1e-12, 1 - 1e-12)
        return 0.5 * (1 + torch.erf((torch.log(u / (1 - u)) - self.loc) / (self.scale * 2**0.5)))


@dataclass(frozen=True)
class LikelihoodWeighted(TimeSampler):
    kind: ClassVar[str] = "likelihood"
    needs_likelihood_weighting: ClassVar[bool] = True

    def sample(self, path: AffinePath, n: int, device: Any = "cpu", generator: Generator | None = None) -> tuple[Tensor, Tensor | None]:
        return path.likelihood_weighted_t(n, device=device, generator=generator)


def make_time_sampler(kind: str = "uniform", **options: float) -> TimeSampler:
    return TimeSampler.by_name(kind, **options)
