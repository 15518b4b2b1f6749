"""Distribution distances that need no learned features and no downloaded weights.

* Distances on raw coordinates: sliced Wasserstein and energy distance (2D toys, small images).
* The Frechet distance between Gaussian fits of (N, D) features, which the feature-based distances
  (fm_core.feature_metrics: the digits-classifier Frechet distance, FID) are built on.
* ``ode_solution_error``: per-dimension MSE against a reference solve (the paper's Fig. 7).

Which of these a dataset reports is chosen by name in fm_core.sample_metrics.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch
from torch import Tensor


def _flat64(x: Tensor, what: str) -> Tensor:
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty batch (first dimension = samples), got shape {tuple(x.shape)}")
    return x.detach().reshape(x.shape[0], -1).to(device="cpu", dtype=torch.float64)


def _check_same_dim(x: Tensor, y: Tensor) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same number of dimensions per sample, got {x.shape[1]} and {y.shape[1]}"
        )


# --------------------------------------------------------------------------------------------
# Distances on raw coordinates
# --------------------------------------------------------------------------------------------


def _interp_quantiles(sorted_vals: Tensor, levels: Tensor) -> Tensor:
    """Linearly interpolated quantiles of each column of a sorted (n, P) array at `levels`.

    Sample k sits at level (k + 0.5) / n, so with equal sample sizes and levels (k + 0.5) / n
    this returns the sorted values themselves: the exact 1D optimal-transport matching.
    """
    n = sorted_vals.shape[0]
    pos = (levels * n - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo.to(pos.dtype))[:, None]
    return sorted_vals[lo] * (1 - w) + sorted_vals[hi] * w


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256, p: int = 2, seed: int = 0) -> float:
    """Sliced p-Wasserstein distance, (E_theta W_p^p(theta.x, theta.y))^(1/p), Monte Carlo over theta.

    Directions are uniform on the sphere from a fixed-seed generator, so repeated evaluations
    (and different models) are compared on the same slices.  Unequal sample sizes are handled
    by comparing both 1D distributions at max(n, m) common quantile levels.  Image-shaped
    inputs are flattened.
    """
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    xf, yf = _flat64(x, "x"), _flat64(y, "y")
    _check_same_dim(xf, yf)
    g = torch.Generator().manual_seed(int(seed))
    theta = torch.randn(n_projections, xf.shape[1], generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)
    px = torch.sort(xf @ theta.T, dim=0).values
    py = torch.sort(yf @ theta.T, dim=0).values
    k = max(px.shape[0], py.shape[0])
    levels = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    diff = _interp_quantiles(px, levels) - _interp_quantiles(py, levels)
    return float(diff.abs().pow(p).mean().pow(1.0 / p))


def _mean_distance(a: Tensor, b: Tensor, chunk: int = 2048) -> float:
    """E|A - B| over all pairs, in row chunks so memory stays O(chunk * len(b))."""
    total = 0.0
    for i in range(0, a.shape[0], chunk):
        total += float(torch.cdist(a[i : i + chunk], b).sum())
    return total / (a.shape[0] * b.shape[0])


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| (Szekely & Rizzo), flattened inputs.

    The V-statistic (self-pairs included) is used because it is provably non-negative, unlike
    the unbiased U-statistic; its O(1/n) bias is negligible at evaluation sample sizes.
    """
    xf, yf = _flat64(x, "x"), _flat64(y, "y")
    _check_same_dim(xf, yf)
    value = 2.0 * _mean_distance(xf, yf) - _mean_distance(xf, xf) - _mean_distance(yf, yf)
    return max(value, 0.0)  # clip float round-off only


def ode_solution_error(x: Tensor, reference: Tensor) -> float:
    """Mean squared error per dimension (per pixel for images) against a reference solve.

    The paper's Fig. 7 measure: both solutions start from the same noise, so this isolates
    the solver's discretisation error from the model's.
    """
    if x.shape != reference.shape:
        raise ValueError(f"x and reference must have the same shape, got {tuple(x.shape)} and {tuple(reference.shape)}")
    if x.numel() == 0:
        raise ValueError("ode_solution_error needs non-empty inputs")
    diff = x.detach().to("cpu", torch.float64) - reference.detach().to("cpu", torch.float64)
    return float(diff.pow(2).mean())


# --------------------------------------------------------------------------------------------
# Frechet distance between Gaussian fits
# --------------------------------------------------------------------------------------------


def feature_stats(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, in float64 for a stable sqrtm."""
    f = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    if f.ndim < 2 or f.shape[0] < 2:
        raise ValueError(f"feature_stats needs at least 2 feature vectors of shape (N, D), got shape {f.shape}")
    f = f.reshape(f.shape[0], -1).astype(np.float64)
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(
    mu1: np.ndarray | Tensor,
    cov1: np.ndarray | Tensor,
    mu2: np.ndarray | Tensor,
    cov2: np.ndarray | Tensor,
    eps: float = 1e-6,
) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)): the 2-Wasserstein distance^2 of two Gaussians.

    Rank-deficient covariances (fewer samples than dimensions, dead features) can make the
    square root non-finite; then eps * I is added to both, as in the reference FID code.
    Imaginary parts of the square root are numerical noise and are dropped; the result is
    clipped at 0 so identical statistics give exactly 0 rather than -1e-12.
    """

    def as_np(a: np.ndarray | Tensor) -> np.ndarray:
        return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)

    m1, m2 = np.atleast_1d(as_np(mu1)).astype(np.float64), np.atleast_1d(as_np(mu2)).astype(np.float64)
    c1, c2 = np.atleast_2d(as_np(cov1)).astype(np.float64), np.atleast_2d(as_np(cov2)).astype(np.float64)
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or c1.shape != (d, d) or c2.shape != (d, d):
        raise ValueError(
            f"frechet_distance: shape mismatch, mu1 {m1.shape}, cov1 {c1.shape}, mu2 {m2.shape}, cov2 {c2.shape}"
        )
    diff = m1 - m2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns on singular products; handled below
        covmean = scipy.linalg.sqrtm(c1 @ c2)
        if not np.isfinite(covmean).all():
            offset = np.eye(d) * eps
            covmean = scipy.linalg.sqrtm((c1 + offset) @ (c2 + offset))
    covmean = np.real(covmean)
    value = float(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * np.trace(covmean))
    if not np.isfinite(value):
        raise ValueError("frechet_distance: result is not finite (check the inputs for NaN/inf)")
    return max(value, 0.0)
