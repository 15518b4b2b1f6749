"""Conditional Gaussian probability paths of Lipman et al. (2023), Section 4: one path class per schedule.

Every path here is *affine*: given noise x0 ~ N(0, I) and a data point x1,

    x_t = psi_t(x0 | x1) = alpha_t * x1 + sigma_t * x0,

with t = 0 the noise end and t = 1 the data end (the paper's convention). A schedule is one subclass of
`AffinePath` that gives alpha_t, sigma_t and their derivatives; sampling, the CFM target, the conditional
field and the score <-> vector-field conversion are shared. What a schedule can do sits beside its name as
class attributes (`score_field`, `likelihood_weighting`, its options as dataclass fields), and every other
part of fmx (fm_core.names, the sweep validation) reads them from `PATHS`:

* OT:        alpha_t = t,               sigma_t = 1 - (1 - sigma_min) t
* VP:        alpha_t = a(1 - t),        sigma_t = sqrt(1 - a(1 - t)^2),  a(s) = exp(-T(s) / 2)
* VE:        alpha_t = 1,               sigma_t = sigma_ve(1 - t),  sigma_ve geometric in s
* cosine:    alpha_t = sin(pi t / 2),   sigma_t = cos(pi t / 2)
* poly (n):  alpha_t = t^n,             sigma_t = 1 - t^n
* linear_vp: alpha_t = t,               sigma_t = sqrt(1 - t^2)

The regression target of conditional flow matching is d/dt psi_t(x0) = alpha'_t x1 + sigma'_t x0.

This module imports PyTorch at first use, not at import: the sweep driver and `fmx validate` read the
schedules' names and capabilities from it without loading PyTorch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import Tensor


from fm_core.lazy import Registered, option, option_problem, torch  # noqa: F401 - torch: imported at first use

#: Every schedule by name, in the order they are defined (filled as each subclass is created).
PATHS: dict[str, type[AffinePath]] = {}


def _expand_like(t: Tensor, x: Tensor) -> Tensor:
    """Broadcast a per-sample time vector (or scalar) over the trailing dims of x."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t
    return t.reshape(t.shape[0], *([1] * (x.ndim - 1)))


class AffinePath(Registered, ABC):
    """A Gaussian conditional path x_t = alpha_t x1 + sigma_t x0 on t in [0, t_max]."""

    _registry = PATHS
    _family = "paths"
    _called = "path"

    name: ClassVar[str] = "affine"
    #: Largest t at which the path is evaluated (diffusion paths are singular at t = 1).
    t_max: ClassVar[float] = 1.0
    #: alpha_t > 0 on all of [0, t_max]: a score then defines the probability-flow field (Tweedie divides by
    #: alpha), so the score objectives (sm, scoreflow, ddpm) can train on this path.
    score_field: ClassVar[bool] = False
    #: A diffusion coefficient g(t) to weight the score loss by likelihood (the ScoreFlow objective).
    likelihood_weighting: ClassVar[bool] = False
    #: The option a sweep's `train.sigma_min` sets (the std left at the data end, the paper's sigma_min);
    #: None where the schedule has no such free choice.
    sigma_min_option: ClassVar[str | None] = None

    @abstractmethod
    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """alpha_t and sigma_t, elementwise in t."""

    @abstractmethod
    def d_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Their time derivatives alpha'_t and sigma'_t, elementwise in t."""

    @property
    def prior_std(self) -> float:
        """Std of the isotropic Gaussian the ODE starts from at t = 0 (sigma_0)."""
        _, s0 = self.alpha_sigma(torch.zeros((), dtype=torch.float64))
        return float(s0)

    def sample_t(self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
        """Training times, uniform on [0, t_max]."""
        t = torch.rand(n, device=device, generator=generator)
        return t if self.t_max == 1.0 else t * self.t_max

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """x_t = psi_t(x0 | x1) and the CFM target d/dt psi_t(x0 | x1)."""
        alpha, sigma = (_expand_like(v, x1) for v in self.alpha_sigma(t))
        d_alpha, d_sigma = (_expand_like(v, x1) for v in self.d_alpha_sigma(t))
        return alpha * x1 + sigma * x0, d_alpha * x1 + d_sigma * x0

    def conditional_vector_field(self, x: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """u_t(x | x1) = sigma'/sigma (x - alpha x1) + alpha' x1 (Theorem 3)."""
        alpha, sigma = (_expand_like(v, x1) for v in self.alpha_sigma(t))
        d_alpha, d_sigma = (_expand_like(v, x1) for v in self.d_alpha_sigma(t))
        return d_sigma / sigma * (x - alpha * x1) + d_alpha * x1

    def score_to_vector_field(self, x: Tensor, score: Tensor, t: Tensor) -> Tensor:
        """Probability-flow vector field from the marginal score.

        Tweedie gives E[x0 | x_t] = -sigma score and E[x1 | x_t] = (x + sigma^2 score) / alpha, so
        v = E[alpha' x1 + sigma' x0 | x] = alpha'/alpha x + (alpha'/alpha sigma^2 - sigma' sigma) score.
        For VP this is beta(1 - t)/2 (x + score), the paper's probability-flow ODE.
        """
        alpha, sigma = (_expand_like(v, x) for v in self.alpha_sigma(t))
        d_alpha, d_sigma = (_expand_like(v, x) for v in self.d_alpha_sigma(t))
        ratio = d_alpha / alpha
        return ratio * x + (ratio * sigma**2 - d_sigma * sigma) * score

    def likelihood_weighted_t(
        self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Times for the ScoreFlow objective and the importance weight g(t)^2 / (sigma_t^2 q(t)).

        The default is uniform times with the explicit weight; paths with a closed-form inverse CDF
        of q ~ g^2 / sigma^2 override this to cut the estimator's variance.
        """
        raise ValueError(f"path '{self.name}' has no diffusion coefficient; ScoreFlow needs vp or ve")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(frozen=True, repr=True)
class OTPath(AffinePath):
    """Optimal-transport displacement path: mu_t = t x1, sigma_t = 1 - (1 - sigma_min) t."""

    sigma_min: float = option(0.0, 0.0, 1.0, open_high=True)
    name: ClassVar[str] = "ot"
    t_max: ClassVar[float] = 1.0
    sigma_min_option: ClassVar[str | None] = "sigma_min"

    def __post_init__(self) -> None:
        if not 0.0 <= self.sigma_min < 1.0:
            raise ValueError(f"ot path: sigma_min must be in [0, 1), got {self.sigma_min}")

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return t, 1.0 - (1.0 - self.sigma_min) * t

    def d_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        one = torch.ones_like(t)
        return one, -(1.0 - self.sigma_min) * one

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The affine sample in two fused ops: the target x1 - (1 - sigma_min) x0 does not depend on t,
        and x_t = t x1 + (1 - (1 - sigma_min) t) x0 = x0 + t * target (the training hot path)."""
        target = x1 - x0 if self.sigma_min == 0.0 else torch.add(x1, x0, alpha=-(1.0 - self.sigma_min))
        return torch.addcmul(x0, _expand_like(t, x1), target), target


@dataclass(frozen=True, repr=True)
class VPPath(AffinePath):
    """Variance-preserving diffusion path with beta(s) = beta_min + s (beta_max - beta_min), s = 1 - t."""

    # beta_max <= 100: alpha_t = exp(-T / 2) stays above float32's smallest normal at T(1) = 50.
    beta_min: float = option(0.1, 0.0, 100.0)
    beta_max: float = option(20.0, 0.0, 100.0, open_low=True)
    eps: float = option(1e-5, 0.0, 0.1, open_low=True)
    name: ClassVar[str] = "vp"
    score_field: ClassVar[bool] = True
    likelihood_weighting: ClassVar[bool] = True

    @property
    def t_max(self) -> float:  # type: ignore[override]
        return 1.0 - self.eps

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta_min < self.beta_max:
            raise ValueError(f"vp path: needs 0 <= beta_min < beta_max, got {self.beta_min} and {self.beta_max}")

    def _s(self, t: Tensor) -> Tensor:
        """Diffusion time s = 1 - t, held at eps past t_max.

        Adaptive solvers step beyond the last output time and interpolate back; holding the
        field at t_max there keeps it finite instead of NaN where sigma_t would reach 0.
        """
        return (1.0 - t).clamp_min(self.eps)

    def _T(self, s: Tensor) -> Tensor:
        return s * self.beta_min + 0.5 * s**2 * (self.beta_max - self.beta_min)

    def beta(self, s: Tensor) -> Tensor:
        return self.beta_min + s * (self.beta_max - self.beta_min)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        T = self._T(self._s(t))
        # sqrt(-expm1(-T)) keeps sigma accurate when T is tiny (t near the data end).
        return torch.exp(-0.5 * T), torch.sqrt(-torch.expm1(-T))

    def d_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        s = self._s(t)
        T, b = self._T(s), self.beta(s)
        alpha = torch.exp(-0.5 * T)
        d_alpha = 0.5 * b * alpha
        # d/dt sqrt(1 - e^{-T}) = -b e^{-T} / (2 sqrt(1 - e^{-T})).
        d_sigma = -0.5 * b * torch.exp(-T) / torch.sqrt(-torch.expm1(-T))
        return d_alpha, d_sigma

    def _log_cdf_arg(self, s: Tensor) -> Tensor:
        """log(e^{T(s)} - 1): the antiderivative of beta(s) / (1 - e^{-T(s)}) in s."""
        T = self._T(s)
        return T + torch.log(-torch.expm1(-T))

    def likelihood_weighted_t(
        self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sample s = 1 - t with density proportional to g^2 / sigma^2 = beta(s) / (1 - e^{-T(s)}).

        Its CDF is (L(s) - L(eps)) / Z with L(s) = log(e^{T(s)} - 1), so inversion is exact:
        T = softplus(L), then solve the quadratic T(s) = T for s (Song et al., 2021, likelihood
        weighting with importance sampling). The weight g^2 / (sigma^2 q) is the constant Z.
        """
        f64 = torch.float64
        lo = self._log_cdf_arg(torch.tensor(self.eps, dtype=f64))
        hi = self._log_cdf_arg(torch.tensor(1.0, dtype=f64))
        u = torch.rand(n, dtype=f64, generator=generator)
        T = torch.nn.functional.softplus(lo + u * (hi - lo))
        a = 0.5 * (self.beta_max - self.beta_min)
        s = (-self.beta_min + torch.sqrt(self.beta_min**2 + 4.0 * a * T)) / (2.0 * a)
        t = (1.0 - s.clamp(self.eps, 1.0)).to(torch.get_default_dtype()).to(device)
        weight = torch.full_like(t, float(hi - lo))
        return t, weight


@dataclass(frozen=True, repr=True)
class VEPath(AffinePath):
    """Variance-exploding path: mu_t = x1, sigma_t = sigma_ve(1 - t), sigma_ve(s) geometric in s.

    Its t = 0 end is N(x1, sigma_max^2), so sampling starts from N(0, sigma_max^2 I): choose
    sigma_max well above the data's scale (Song et al. 2021 take the largest pairwise distance).
    """

    sigma_min: float = option(0.01, 0.0, 1e4, open_low=True)
    sigma_max: float = option(10.0, 0.0, 1e4, open_low=True)
    eps: float = option(1e-5, 0.0, 0.1, open_low=True)
    name: ClassVar[str] = "ve"
    score_field: ClassVar[bool] = True
    likelihood_weighting: ClassVar[bool] = True

    @property
    def t_max(self) -> float:  # type: ignore[override]
        return 1.0 - self.eps

    def __post_init__(self) -> None:
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"ve path: needs 0 < sigma_min < sigma_max, got {self.sigma_min} and {self.sigma_max}")

    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        # Held at t_max beyond it, like VPPath, so solver overshoot stays on the path's last value.
        sigma = self.sigma_min * torch.exp((1.0 - t).clamp_min(self.eps) * self._log_ratio())
        return torch.ones_like(t), sigma

    def d_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        _, sigma = self.alpha_sigma(t)
        return torch.zeros_like(t), -self._log_ratio() * sigma

    def likelihood_weighted_t(
        self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """For VE, g^2 / sigma^2 = 2 log(sigma_max / sigma_min) is constant: uniform times are optimal."""
        t = self.sample_t(n, device=device, generator=generator)
        return t, torch.full_like(t, 2.0 * self._log_ratio() * self.t_max)


@dataclass(frozen=True, repr=True)
class CosinePath(AffinePath):
    """The cosine schedule (Nichol & Dhariwal 2021 in flow form): alpha_t = sin(pi t/2), sigma_t = cos(pi t/2),
    so alpha^2 + sigma^2 = 1 at every t, like VP, but reaching pure data at t = 1."""

    name: ClassVar[str] = "cosine"

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        angle = 0.5 * math.pi * t
        return torch.sin(angle), torch.cos(angle)

    def d_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        angle = 0.5 * math.pi * t
        return 0.5 * math.pi * torch.cos(angle), -0.5 * math.pi * torch.sin(angle)


@dataclass(frozen=True, repr=True)
class PolyPath(AffinePath):
    """A polynomial convex schedule: alpha_t = t^n, sigma_t = 1 - t^n (n = 1 is OT with sigma_min = 0;
    larger n stays near the noise longer)."""

    n: float = option(2.0, 0.0, 100.0, open_low=True)
    name: ClassVar[str] = "poly"

    def __post_init__(self) -> None:
        if not self.n > 0:
            raise ValueError(f"poly path: n must be > 0, got {self.n}")

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a = t**self.n
        return a, 1.0 - a

    def d_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        # n t^(n-1), written so that t = 0 gives 0 (n > 1) instead of 0 * inf.
        d = self.n * t.clamp_min(torch.finfo(t.dtype).tiny) ** (self.n - 1.0)
        return d, -d


@dataclass(frozen=True, repr=True)
class LinearVPPath(AffinePath):
    """A linear variance-preserving schedule: alpha_t = t, sigma_t = sqrt(1 - t^2). sigma'_t = -t / sigma_t is
    singular at t = 1 (the CFM target's variance would be unbounded there), so training and sampling stop
    at t_max = 1 - eps, where sigma is about sqrt(2 eps)."""

    eps: float = option(1e-4, 0.0, 0.1, open_low=True)
    name: ClassVar[str] = "linear_vp"

    @property
    def t_max(self) -> float:  # type: ignore[override]
        return 1.0 - self.eps

    def _t(self, t: Tensor) -> Tensor:
        """t held at t_max past it (adaptive solvers overshoot the last time)."""
        return t.clamp_max(self.t_max)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = self._t(t)
        # sqrt((1 - t)(1 + t)) keeps sigma accurate near t = 1, where 1 - t^2 cancels.
        return t, torch.sqrt((1.0 - t) * (1.0 + t))

    def d_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        held = self._t(t)
        inside = (t <= self.t_max).to(t.dtype)  # past t_max the path is constant
        return inside, -inside * held / torch.sqrt((1.0 - held) * (1.0 + held))


def make_path(name: str, **options: float) -> AffinePath:
    """Build a path by name (`PATHS`) with its options (sigma_min, beta_min, n, ...)."""
    return AffinePath.by_name(name, **options)
