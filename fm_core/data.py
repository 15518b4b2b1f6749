"""Datasets for training (random batches) and evaluation (a fixed, held-out reference set).

Every dataset answers two questions with one interface, so the trainer and the evaluator never
special-case a data source:

* ``sample(n, generator)`` -- a training batch, float32 of shape ``(n, *shape)``;
* ``reference(n, seed)``   -- a deterministic evaluation set that training never sees: the
  held-out split for finite data, fixed-seed draws (from a seed range disjoint from typical
  training seeds) for synthetic distributions.

Image datasets are stored as 8-bit integers and served as floats in [-1, 1] via x / 127.5 - 1;
:func:`to_uint8` inverts that exactly, which the likelihood code needs for dequantization.
Nothing here downloads anything: ``digits`` ships with scikit-learn, ``image_folder`` and
``cifar10`` read local files only.
"""

from __future__ import annotations

import inspect
import math
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fm_core.dataset_specs import DATASET_SPECS
from fm_core.names import DATASET_NAMES, DATASET_OPTIONS

#: Synthetic reference sets are drawn with seed ``_REFERENCE_SEED_OFFSET + seed`` so that
#: ``reference(n, seed=0)`` never reproduces a training stream seeded with a small integer.
_REFERENCE_SEED_OFFSET = 1_000_003

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CIFAR_DIRNAME = "cifar-10-batches-py"
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_FILE = "test_batch"


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


def _check_n(n: int, what: str = "n") -> int:
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
        n = _check_n(n)
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
        n = _check_n(n)
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
        n = _check_n(n)
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

        n = _check_n(n)
        if n == 0:
            return torch.empty(0, 2, dtype=torch.float32)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        x, _ = make_moons(n_samples=n, noise=self.noise, shuffle=True, random_state=seed)
        out = (torch.from_numpy(x) - self.center) / self.scale
        return out.to(torch.float32)


# --------------------------------------------------------------------------------------------
# Finite image datasets
# --------------------------------------------------------------------------------------------


def _split_indices(
    n: int, holdout_fraction: float, split_seed: int, option_prefix: str
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-seed (legacy NumPy RNG: stable across versions) train / held-out index split."""
    if not (0.0 <= holdout_fraction < 1.0):
        raise ValueError(f"{option_prefix}: option 'holdout_fraction' must be in [0, 1), got {holdout_fraction!r}")
    perm = np.random.RandomState(split_seed).permutation(n)
    n_held = int(round(holdout_fraction * n))
    if holdout_fraction > 0 and n >= 2:
        n_held = min(max(n_held, 1), n - 1)
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


class ImageDataset(Dataset):
    """Finite 8-bit images with a fixed train / held-out split.

    The raw integers stay available (``images_train_uint8``, ``images_heldout_uint8``) because
    dequantization and exact bits/dim need them; ``labels_train`` / ``labels_heldout`` are
    int64 class labels, or ``None`` when the source has none.
    """

    is_image = True

    def __init__(
        self,
        name: str,
        images_train_uint8: Tensor,
        images_heldout_uint8: Tensor,
        labels_train: Tensor | None = None,
        labels_heldout: Tensor | None = None,
        hflip: bool = False,
    ) -> None:
        if images_train_uint8.dtype != torch.uint8 or images_heldout_uint8.dtype != torch.uint8:
            raise ValueError(f"{name}: images must be stored as uint8")
        if images_train_uint8.shape[0] == 0:
            raise ValueError(f"{name}: the training split is empty")
        if images_train_uint8.shape[1:] != images_heldout_uint8.shape[1:]:
            raise ValueError(f"{name}: train and held-out images differ in shape")
        self.name = name
        self.shape = tuple(int(s) for s in images_train_uint8.shape[1:])
        self.images_train_uint8 = images_train_uint8.contiguous()
        self.images_heldout_uint8 = images_heldout_uint8.contiguous()
        self.labels_train = labels_train
        self.labels_heldout = labels_heldout
        self.hflip = bool(hflip)

    @property
    def num_train(self) -> int:
        return int(self.images_train_uint8.shape[0])

    @property
    def num_heldout(self) -> int:
        return int(self.images_heldout_uint8.shape[0])

    def train_images(self) -> Tensor:
        """The whole training split as floats in [-1, 1] (on the CPU)."""
        return from_uint8(self.images_train_uint8.cpu())

    def heldout_images(self) -> Tensor:
        """The whole held-out split as floats in [-1, 1], in stored order."""
        return from_uint8(self.images_heldout_uint8)

    def sample_indices(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Training-split indices drawn uniformly with replacement (to pair images with labels)."""
        return torch.randint(0, self.num_train, (_check_n(n),), generator=generator)

    @property
    def num_classes(self) -> int | None:
        """How many classes the labels name (None: the source has no labels)."""
        return None if self.labels_train is None else int(self.labels_train.max()) + 1

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Training images drawn uniformly *with replacement*, as float32 in [-1, 1] on the device the training
        split lives on (`to_device`: gathered and converted there, never copied from the CPU per batch); with
        `hflip`, each mirrored left-right with probability 1/2 (drawn from `generator`: the same per seed and
        rank). The held-out split and the references stay on the CPU."""
        return self.sample_with_labels(n, generator)[0]

    def sample_with_labels(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """`sample` and the drawn images' class labels (None without labels), on the images' device."""
        index = self.sample_indices(n, generator)
        labels = None if self.labels_train is None else self.labels_train[index].to(self.images_train_uint8.device)
        return self._images_at(index, generator), labels

    def _images_at(self, index: Tensor, generator: torch.Generator | None) -> Tensor:
        n = len(index)
        flip = torch.rand(n, generator=generator) < 0.5 if self.hflip else None
        images = from_uint8(self.images_train_uint8[index.to(self.images_train_uint8.device)])
        if flip is not None:
            flip = flip.to(images.device)[:, None, None, None]
            images = torch.where(flip, images.flip(-1), images)
        return images

    def to_device(self, device: str | torch.device) -> ImageDataset:
        """Keep the training split (uint8: a quarter of float32's memory) on the training device."""
        self.images_train_uint8 = self.images_train_uint8.to(device)
        return self

    def reference_indices(self, n: int, seed: int = 0) -> Tensor:
        """Held-out indices used by :meth:`reference` (all of them, in order, if n >= split size)."""
        n = _check_n(n)
        if n >= self.num_heldout:
            return torch.arange(self.num_heldout)
        perm = np.random.RandomState(int(seed)).permutation(self.num_heldout)[:n]
        return torch.from_numpy(np.sort(perm)).long()

    def reference(self, n: int, seed: int = 0) -> Tensor:
        """Held-out images, never seen in training.

        If ``n`` exceeds the held-out split, the whole split is returned -- fewer than ``n``
        rows, so callers should use ``len(result)``.  Otherwise a ``seed``-fixed subset of size n.
        """
        return from_uint8(self.images_heldout_uint8[self.reference_indices(n, seed)])


class DigitsDataset(ImageDataset):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download).

    Pixel values 0..16 become 8-bit integers round(v * 255 / 16), shape (1, 8, 8).  The split
    is a fixed-seed permutation with ``holdout_fraction`` of the images held out.
    """

    def __init__(self, holdout_fraction: float = 0.2, split_seed: int = 0, hflip: bool = False) -> None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        raw = np.asarray(bunch.images, dtype=np.float64)  # (N, 8, 8), 0..16
        images = torch.from_numpy(np.rint(raw * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1)
        labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
        tr, ho = _split_indices(images.shape[0], holdout_fraction, split_seed, "digits")
        tr_t, ho_t = torch.from_numpy(tr), torch.from_numpy(ho)
        super().__init__("digits", images[tr_t], images[ho_t], labels[tr_t], labels[ho_t], hflip=hflip)
        self.holdout_fraction = float(holdout_fraction)
        self.split_seed = int(split_seed)
        self.train_index = tr_t  # positions in load_digits() order
        self.heldout_index = ho_t


def _load_image(path: Path, image_size: int | None, channels: int) -> np.ndarray:
    """Read one file as uint8 (C, H, W): convert mode, centre-crop to square, resize (bicubic)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        if image_size is not None:
            w, h = im.size
            if w != h:  # crop rather than stretch, so objects keep their aspect ratio
                s = min(w, h)
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s))
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), resample=Image.Resampling.BICUBIC)
        arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = np.ascontiguousarray(arr.transpose(2, 0, 1))
    return arr


class ImageFolderDataset(ImageDataset):
    """Every PNG/JPEG under ``root`` (recursively, sorted by path), loaded once into memory.

    Images are converted to ``channels`` (1: grayscale, 3: RGB), centre-cropped to a square
    and resized to ``image_size`` (``None`` keeps the native size, which must then agree).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        image_size: int | None = 32,
        channels: int = 3,
        holdout_fraction: float = 0.1,
        split_seed: int = 0,
        hflip: bool = False,
    ) -> None:
        if root is None:
            raise ValueError("image_folder: option 'root' is required (a folder of PNG/JPEG files)")
        if channels not in (1, 3):
            raise ValueError(f"image_folder: option 'channels' must be 1 or 3, got {channels!r}")
        bad_size = isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
        if image_size is not None and bad_size:
            raise ValueError(
                f"image_folder: option 'image_size' must be a positive integer or None, got {image_size!r}"
            )
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise FileNotFoundError(f"image_folder: root '{root_path}' does not exist or is not a directory")
        files = sorted(p for p in root_path.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(
                f"image_folder: no {'/'.join(s.lstrip('.') for s in _IMAGE_SUFFIXES)} files found under '{root_path}'"
            )
        arrays = [_load_image(p, image_size, channels) for p in files]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(
                f"image_folder: images under '{root_path}' differ in size {sorted(shapes)}; set option 'image_size'"
            )
        images = torch.from_numpy(np.stack(arrays))
        tr, ho = _split_indices(len(files), holdout_fraction, split_seed, "image_folder")
        # Class labels from class subfolders (root/<class>/...), as torchvision's ImageFolder reads them;
        # a folder with images outside them, or with one class only, has no labels.
        parents = [p.relative_to(root_path).parts for p in files]
        self.classes = sorted({parts[0] for parts in parents}) if all(len(parts) > 1 for parts in parents) else []
        labels = None
        if len(self.classes) > 1:
            index = {name: i for i, name in enumerate(self.classes)}
            labels = torch.tensor([index[parts[0]] for parts in parents], dtype=torch.int64)
        super().__init__(
            "image_folder", images[torch.from_numpy(tr)], images[torch.from_numpy(ho)],
            None if labels is None else labels[torch.from_numpy(tr)], None if labels is None else labels[torch.from_numpy(ho)],
            hflip=hflip,
        )  # fmt: skip
        self.root = root_path
        self.files_train = [files[i] for i in tr]
        self.files_heldout = [files[i] for i in ho]


def _resolve_cifar_dir(root: str | Path) -> Path:
    """Accept the folder holding ``cifar-10-batches-py/`` or that folder itself."""
    root_path = Path(root).expanduser()
    expected = (
        f"expected the python-pickle CIFAR-10 layout: '{_CIFAR_DIRNAME}/' containing "
        f"{', '.join(_CIFAR_TRAIN_FILES)} and {_CIFAR_TEST_FILE}; pass either that folder or its parent"
    )
    for candidate in (root_path / _CIFAR_DIRNAME, root_path):
        if all((candidate / f).is_file() for f in (*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE)):
            return candidate
    if not root_path.exists():
        raise FileNotFoundError(f"cifar10: root '{root_path}' does not exist; {expected}")
    raise FileNotFoundError(f"cifar10: no complete CIFAR-10 batches under '{root_path}'; {expected}")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10's batches are pickles of dicts, lists, bytes and numpy arrays. Unpickling may call whatever a
    file names, so only what rebuilds a numpy array may be named: any other global (os.system, say) is refused
    before it can run."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR-10 batch holds only arrays and lists")
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> tuple[Tensor, Tensor]:
    with open(path, "rb") as f:
        try:
            batch: dict[Any, Any] = _ArraysOnlyUnpickler(f, encoding="bytes").load()
        except pickle.UnpicklingError as err:
            raise ValueError(f"cifar10: '{path}': {err}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"cifar10: '{path}' is not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"cifar10: '{path}' is not a CIFAR-10 batch (missing 'data' or 'labels')")
    arr = np.asarray(data, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != 3 * 32 * 32 or arr.shape[0] != len(labels):
        raise ValueError(f"cifar10: '{path}' has data of shape {arr.shape}; expected (N, 3072) with N labels")
    images = torch.from_numpy(arr.reshape(-1, 3, 32, 32).copy())
    return images, torch.as_tensor(np.asarray(labels, dtype=np.int64))


class Cifar10Dataset(ImageDataset):
    """CIFAR-10 from a local python-pickle copy: train = data_batch_1..5, reference = test_batch."""

    def __init__(self, root: str | Path | None = None, hflip: bool = False) -> None:
        if root is None:
            raise ValueError(f"cifar10: option 'root' is required (the folder containing '{_CIFAR_DIRNAME}/')")
        folder = _resolve_cifar_dir(root)
        train = [_load_cifar_batch(folder / f) for f in _CIFAR_TRAIN_FILES]
        test_images, test_labels = _load_cifar_batch(folder / _CIFAR_TEST_FILE)
        super().__init__(
            "cifar10",
            torch.cat([b[0] for b in train]),
            test_images,
            torch.cat([b[1] for b in train]),
            test_labels,
            hflip=hflip,
        )
        self.root = folder


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Dataset]] = {
    "checkerboard": CheckerboardDataset,
    "8gaussians": EightGaussiansDataset,
    "moons": MoonsDataset,
    "gmm": GaussianMixtureDataset,
    "digits": DigitsDataset,
    "image_folder": ImageFolderDataset,
    "cifar10": Cifar10Dataset,
}


def _defaults(cls: type[Dataset]) -> dict[str, Any]:
    """The constructor's keyword arguments and their defaults, in order."""
    params = inspect.signature(cls.__init__).parameters
    return {p: params[p].default for p in params if p not in ("self", "name")}


def _spec_agrees(name: str, cls: type[Dataset]) -> bool:
    """The torch-free spec sweep files are validated against describes this constructor exactly."""
    spec = DATASET_SPECS[name]
    return (
        _defaults(cls) == {o.name: o.default for o in spec.options}
        and tuple(_defaults(cls)) == DATASET_OPTIONS[name]
        and cls.is_image == spec.is_image
    )


assert tuple(_REGISTRY) == DATASET_NAMES
assert all(_spec_agrees(name, cls) for name, cls in _REGISTRY.items()), "update fm_core.dataset_specs"


def make_dataset(name: str, **options: Any) -> Dataset:
    """Build a dataset by name; unknown names or options raise ValueError listing what is valid."""
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset '{name}'; choose one of {', '.join(DATASET_NAMES)}")
    cls = _REGISTRY[key]
    params = DATASET_OPTIONS[key]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(repr(u) for u in unknown)} for dataset '{key}'; "
            f"valid options: {', '.join(params) if params else '(none)'}"
        )
    return cls(**options)
