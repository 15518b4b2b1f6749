"""Closed-form marginals for Gaussian data: ground truth for solvers, likelihoods and objectives.

With x1 ~ N(mu, s^2 I) and any affine path x_t = alpha_t x1 + sigma_t x0, the marginal p_t is
N(alpha_t mu, (alpha_t^2 s^2 + sigma_t^2) I) and its marginal vector field is linear in x:
    v_t(x) = alpha'_t mu + (m'_t / m_t) (x - alpha_t mu),  m_t^2 = alpha_t^2 s^2 + sigma_t^2.
It transports N(0, sigma_0^2) to N(mu, m_1^2) exactly, which makes every numeric routine testable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fm_core.paths import AffinePath, _expand_like


@dataclass(frozen=True)
class GaussianData:
    """Isotropic Gaussian data N(mu, std^2 I) in the shape of `mu`."""

    mu: Tensor
    std: float

    def _mean_std(self, path: AffinePath, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
        alpha, sigma = path.alpha_sigma(t)
        d_alpha, d_sigma = path.d_alpha_sigma(t)
        m = torch.sqrt(alpha**2 * self.std**2 + sigma**2)
        dm = (alpha * d_alpha * self.std**2 + sigma * d_sigma) / m
        return alpha, d_alpha, m, dm

    def marginal_std(self, path: AffinePath, t: float) -> float:
        t_ = torch.tensor(t, dtype=torch.float64)
        return float(self._mean_std(path, t_, t_)[2])

    def vector_field(self, path: AffinePath):
        """The exact marginal field v(t, x) of `path` for this data (torchdiffeq's argument order)."""

        def field(t: Tensor, x: Tensor) -> Tensor:
            alpha, d_alpha, m, dm = (_expand_like(v, x) for v in self._mean_std(path, t, x))
            mu = self.mu.to(x)
            return d_alpha * mu + dm / m * (x - alpha * mu)

        return field

    def score(self, path: AffinePath):
        """The exact marginal score s(t, x) = -(x - alpha_t mu) / m_t^2."""

        def score(t: Tensor, x: Tensor) -> Tensor:
            alpha, _, m, _ = (_expand_like(v, x) for v in self._mean_std(path, t, x))
            return -(x - alpha * self.mu.to(x)) / m**2

        return score

    def log_prob(self, x: Tensor, std: float | None = None) -> Tensor:
        """log N(x; mu, std^2 I) per sample (std defaults to the data's own)."""
        s = self.std if std is None else std
        d = x[0].numel()
        sq = (x - self.mu.to(x)).reshape(x.shape[0], -1).pow(2).sum(dim=1)
        return -0.5 * sq / s**2 - d * (math.log(s) + 0.5 * math.log(2 * math.pi))
