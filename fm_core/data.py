"""The dataset interface, the 8-bit image convention and the synthetic 2-D distributions.

Every dataset answers two questions with one interface, so the trainer and the evaluator never
special-case a data source:

* ``sample(n, generator)`` -- a training batch, float32 of shape ``(n, *shape)``;
* ``reference(n, seed)``   -- a deterministic evaluation set that training never sees: the
  held-out split for finite data, fixed-seed draws (from a seed range disjoint from typical
  training seeds) for synthetic distributions.

Image datasets (fm_core.image_data) are stored as 8-bit integers and served as floats in [-1, 1]
via x / 127.5 - 1; :func:`to_uint8` inverts that exactly, which the likelihood code needs for
dequantization.  Datasets are built by name in fm_core.datasets.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: Synthetic reference sets are drawn with seed ``_REFERENCE_SEED_OFFSET + seed`` so that
#: ``reference(n, seed=0)`` never reproduces a training stream seeded with a small integer.
_REFERENCE_SEED_OFFSET = 1_000_003


# --------------------------------------------------------------------------------------------
# 8-bit <-> float conversion
# --------------------------------------------------------------------------------------------


def to_uint8(x: Tensor) -> Tensor:
    """Map float images in [-1, 1] back to 0..255 integers (exact inverse of :func:`from_uint8`).

    Rounding absorbs the float32 error of x / 127.5 - 1, so dataset images round-trip
    bit-exactly; values outside [-1, 1] (e.g. model samples) are clipped.
    """
    return ((x.to(torch.float64) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def from_uint8(x: Tensor) -> Tensor:
    """Map 0..255 integers to float32 in [-1, 1] via x / 127.5 - 1 (the datasets' convention)."""
    return x.to(torch.float32) / 127.5 - 1.0


# --------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------


def check_n(n: int, what: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {n!r}")
    return int(n)


class Dataset(ABC):
    """A source of training batches and of a fixed evaluation set, with per-sample ``shape``."""

    name: str
    shape: tuple[int, ...]
    is_image: bool

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """A float32 training batch of shape ``(n, *shape)`` drawn with ``generator``."""

    @abstractmethod
    def reference(self, n: int, seed: int = 0) -> Tensor:
        """A deterministic float32 evaluation set of (at most) ``n`` points."""

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact per-sample log-density in nats; only datasets with a closed form implement it."""
        raise NotImplementedError(f"dataset '{self.name}' has no closed-form density")

    @property
    def dim(self) -> int:
        """Number of scalars per sample, prod(shape)."""
        return int(math.prod(self.shape))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, shape={self.shape})"


class SyntheticDataset(Dataset):
    """An infinite distribution: the reference set is just a fixed-seed draw from it."""

    is_image = False

    def reference(self, n: int, seed: int = 0) -> Tensor:
        """``n`` draws from a generator seeded with a fixed offset + ``seed`` (always exactly n)."""
        n = check_n(n)
        generator = torch.Generator().manual_seed(_REFERENCE_SEED_OFFSET + int(seed))
        return self.sample(n, generator=generator)


# --------------------------------------------------------------------------------------------
# Synthetic 2D datasets
# --------------------------------------------------------------------------------------------


def _as_float64(value: Any, option: str) -> Tensor:
    """A numeric option as a float64 tensor; ragged or non-numeric input names the option."""
    try:
        arr = np.asarray(value.detach().cpu() if isinstance(value, Tensor) else value, dtype=np.float64)
        return torch.as_tensor(arr)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"gmm: option '{option}' must be numeric and rectangular: {exc}") from exc


def _gmm_stds(stds: Any, k: int, d: int) -> Tensor:
    """Per-component stds as K x d: a scalar, K scalars, K x d, or K entries each scalar or length d."""
    if isinstance(stds, (list, tuple)) and len(stds) == k:
        rows = [_as_float64(s, "stds") for s in stds]
        if all(r.ndim == 0 or tuple(r.shape) == (d,) for r in rows):
            return torch.stack([r.expand(d) for r in rows])
    sd = _as_float64(stds, "stds")
    if sd.ndim == 0:
        return sd.expand(k, d).clone()
    if sd.ndim == 1 and sd.shape[0] == k:
        return sd[:, None].expand(k, d).clone()
    if sd.ndim == 2 and tuple(sd.shape) == (k, d):
        return sd
    raise ValueError(
        f"gmm: option 'stds' must have K={k} scalars or shape K x d = {k} x {d}, got shape {tuple(sd.shape)}"
    )


class GaussianMixtureDataset(SyntheticDataset):
    """A mixture of axis-aligned Gaussians; sampling and log-density are both exact.

    ``stds`` may give one scalar per component (isotropic), a full ``K x d`` array of
    per-coordinate standard deviations, or a K-list mixing the two.  ``weights`` are normalised to sum to one.
    """

    def __init__(
        self,
        means: Sequence[Sequence[float]] | Tensor | np.ndarray | None = None,
        stds: Sequence[float] | Sequence[Sequence[float]] | Tensor | np.ndarray | float | None = None,
        weights: Sequence[float] | Tensor | np.ndarray | None = None,
        name: str = "gmm",
    ) -> None:
        if means is None:
            raise ValueError("gmm: option 'means' is required (a K x d list of component means)")
        mu = _as_float64(means, "means")
        if mu.ndim != 2 or mu.shape[0] < 1 or mu.shape[1] < 1:
            raise ValueError(f"gmm: option 'means' must be a non-empty K x d list, got shape {tuple(mu.shape)}")
        k, d = mu.shape
        if not torch.isfinite(mu).all():
            raise ValueError("gmm: option 'means' contains non-finite values")

        if stds is None:
            sd = torch.ones(k, d, dtype=torch.float64)
        else:
            sd = _gmm_stds(stds, k, d)
            if not (torch.isfinite(sd).all() and (sd > 0).all()):
                raise ValueError("gmm: option 'stds' must be finite and strictly positive")

        if weights is None:
            w = torch.full((k,), 1.0 / k, dtype=torch.float64)
        else:
            w = _as_float64(weights, "weights")
            if w.ndim != 1 or w.shape[0] != k:
                raise ValueError(f"gmm: option 'weights' must be a list of K={k} numbers, got shape {tuple(w.shape)}")
            if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise ValueError("gmm: option 'weights' must be finite, non-negative and not all zero")
            w = w / w.sum()

        self.name = name
        self.shape = (int(d),)
        self.means = mu
        self.stds = sd
        self.weights = w

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_n(n)
        if n == 0:
            return torch.empty(0, *self.shape, dtype=torch.float32)
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.shape[0], generator=generator, dtype=torch.float64)
        return (self.means[comp] + self.stds[comp] * eps).to(torch.float32)

    def log_prob(self, x: Tensor) -> Tensor:
        """log sum_k w_k N(x; mu_k, diag(s_k^2)), evaluated in float64 via logsumexp."""
        if x.ndim != 2 or x.shape[1] != self.shape[0]:
            raise ValueError(f"gmm log_prob expects shape (n, {self.shape[0]}), got {tuple(x.shape)}")
        xd = x.to(torch.float64)
        z = (xd[:, None, :] - self.means[None]) / self.stds[None]  # (n, K, d)
        log_norm = -torch.log(self.stds).sum(dim=1) - 0.5 * self.shape[0] * math.log(2 * math.pi)  # (K,)
        log_w = torch.log(self.weights)  # a zero weight gives -inf, which logsumexp handles
        comp = -0.5 * z.pow(2).sum(dim=2) + log_norm[None] + log_w[None]
        out = torch.logsumexp(comp, dim=1)
        return out.to(x.dtype) if x.is_floating_point() else out


class EightGaussiansDataset(GaussianMixtureDataset):
    """Eight equally weighted isotropic Gaussians evenly spaced on a circle (exact density)."""

    def __init__(self, radius: float = 4.0, std: float = 0.5) -> None:
        if not (radius > 0 and math.isfinite(radius)):
            raise ValueError(f"8gaussians: option 'radius' must be positive, got {radius!r}")
        if not (std > 0 and math.isfinite(std)):
            raise ValueError(f"8gaussians: option 'std' must be positive, got {std!r}")
        angles = [2 * math.pi * i / 8 for i in range(8)]
        means = [[radius * math.cos(a), radius * math.sin(a)] for a in angles]
        super().__init__(means=means, stds=[std] * 8, name="8gaussians")
        self.radius = float(radius)
        self.std = float(std)


class CheckerboardDataset(SyntheticDataset):
    """Uniform density on the filled squares of a ``cells x cells`` board covering [-size, size]^2.

    With the defaults (4 x 4 on [-4, 4]^2) this is the FFJORD / flow_matching 2D example: cell
    (i, j), counted from the lower-left corner, is filled iff i + j is even -- eight squares of
    side 2, so the density is 1/32 on them and zero elsewhere.
    """

    name = "checkerboard"

    def __init__(self, size: float = 4.0, cells: int = 4) -> None:
        if not (size > 0 and math.isfinite(size)):
            raise ValueError(f"checkerboard: option 'size' must be positive, got {size!r}")
        if isinstance(cells, bool) or not isinstance(cells, int) or cells < 1:
            raise ValueError(f"checkerboard: option 'cells' must be a positive integer, got {cells!r}")
        self.size = float(size)
        self.cells = cells
        self.shape = (2,)
        self.cell_width = 2.0 * self.size / cells
        ij = [(i, j) for i in range(cells) for j in range(cells) if (i + j) % 2 == 0]
        self._filled = torch.tensor(ij, dtype=torch.float64)  # (n_filled, 2), column then row

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_n(n)
        idx = torch.randint(0, self._filled.shape[0], (n,), generator=generator)
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        corner = -self.size + self._filled[idx] * self.cell_width
        return (corner + u * self.cell_width).to(torch.float32)

    def is_filled(self, x: Tensor) -> Tensor:
        """Boolean mask of points inside a filled square (closed boundaries count as inside)."""
        cell = torch.floor((x.to(torch.float64) + self.size) / self.cell_width).clamp(0, self.cells - 1)
        inside = (x.abs() <= self.size).all(dim=-1)
        return inside & (cell.sum(dim=-1).remainder(2) == 0)

    def log_prob(self, x: Tensor) -> Tensor:
        """log(1 / filled area) on the filled squares and -inf elsewhere."""
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"checkerboard log_prob expects shape (n, 2), got {tuple(x.shape)}")
        area = self._filled.shape[0] * self.cell_width**2
        dtype = x.dtype if x.is_floating_point() else torch.float32
        out = torch.full((x.shape[0],), -math.log(area), dtype=dtype)
        return out.masked_fill(~self.is_filled(x), -math.inf)


class MoonsDataset(SyntheticDataset):
    """scikit-learn's two moons, centred and isotropically rescaled to unit average variance.

    The noiseless arcs (angle uniform on [0, pi]) have mean (0.5, 0.25) and closed-form
    per-axis variances; the Gaussian noise adds ``noise**2`` to each.  One scalar scale (not
    per-axis standardisation) keeps the moons' shape while making the mean coordinate
    variance 1.  ``make_moons`` is seeded from the torch generator, so draws are reproducible
    under a seeded generator like every other synthetic dataset.
    """

    name = "moons"

    def __init__(self, noise: float = 0.05) -> None:
        if not (noise >= 0 and math.isfinite(noise)):
            raise ValueError(f"moons: option 'noise' must be a non-negative number, got {noise!r}")
        self.noise = float(noise)
        self.shape = (2,)
        # Closed-form moments of the noiseless arcs (angle uniform on [0, pi]), plus the noise.
        mean_sin = 2.0 / math.pi
        var_sin = 0.5 - mean_sin**2
        var_x = 0.5 + 0.25 + self.noise**2  # cos has variance 1/2; the two arcs' means differ by 1
        var_y = var_sin + (mean_sin - 0.25) ** 2 + self.noise**2
        self.center = torch.tensor([0.5, 0.25], dtype=torch.float64)
        self.scale = math.sqrt(0.5 * (var_x + var_y))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        from sklearn.datasets import make_moons

        n = check_n(n)
        if n == 0:
            return torch.empty(0, 2, dtype=torch.float32)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        x, _ = make_moons(n_samples=n, noise=self.noise, shuffle=True, random_state=seed)
        out = (torch.from_numpy(x) - self.center) / self.scale
        return out.to(torch.float32)
