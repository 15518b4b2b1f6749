"""FID by the standard protocol: the numbers EDM, StyleGAN2-ADA and clean-fid's `legacy_tensorflow` mode report.

The detector is NVIDIA's TorchScript port of the 2015 TensorFlow Inception (`inception-2015-12-05.pt`), called
as `detector(images, return_features=True)` on uint8 NCHW RGB images of any size (it resizes inside) and
returning (N, 2048) features; fmx never ships or fetches it unasked (a URL is downloaded once, on request, and
checked against its sha256). Samples in [-1, 1] are quantized as EDM's fid.py does,
`(x * 127.5 + 128).clip(0, 255).to(uint8)`; grayscale is repeated to three channels. Mean and covariance
(unbiased, as EDM) are accumulated in float64 batch by batch, and the Frechet distance is fm_core.metrics'.
Any detector with that call signature works: tests use a small scripted stand-in.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from fm_core.cache import atomic_write, default_cache_dir
from fm_core.dataset_specs import IMAGE_SPLITS
from fm_core.fid_files import (
    MAX_DETECTOR_BYTES, URL_SCHEMES, FidFileError, FidStats, is_url, read_bounded, read_stats, sha256_file, write_stats,
)  # fmt: skip
from fm_core.image_data import ImageDataset
from fm_core.metrics import frechet_distance

#: The name rows give this protocol (quantization, detector call, float64 statistics): EDM's fid.py.
FID_PROTOCOL = "edm"
#: Where a downloaded detector is kept, below the cache folder (fm_core.cache).
DETECTORS_DIR = "fid-detectors"
#: The images of each split `eval.fid.reference.split` can name (fm_core.dataset_specs.IMAGE_SPLITS).
_SPLIT_IMAGES = {"train": "images_train_uint8", "heldout": "images_heldout_uint8"}
assert tuple(_SPLIT_IMAGES) == IMAGE_SPLITS


class DetectorError(ValueError):
    """A detector that cannot be used: not the file validation hashed, or not of the standard call signature."""


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------


def detector_file(spec: str, sha256: str, cache_dir: Path | None = None) -> Path:
    """The detector's local file: `spec` itself, or a URL's copy in `<cache>/fid-detectors/`, downloaded the first
    time and whenever the copy there no longer has `sha256` (never kept unless it has)."""
    if not is_url(spec):
        return Path(spec)
    scheme = spec.split("://", 1)[0].lower()
    if scheme not in URL_SCHEMES:
        raise DetectorError(f"FID detector '{spec}': only {', '.join(URL_SCHEMES)} URLs are fetched")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", spec.rstrip("/").rsplit("/", 1)[-1])[-100:]
    path = (cache_dir or default_cache_dir()) / DETECTORS_DIR / f"{sha256[:16]}-{name}"
    if path.is_file() and sha256_file(path, MAX_DETECTOR_BYTES) == sha256:
        return path
    atomic_write(path, lambda f: _download(spec, sha256, f))
    return path


def _download(url: str, sha256: str, out: BinaryIO) -> None:
    """Copy the URL into `out`, hashing as it goes; DetectorError (and nothing kept) unless it has `sha256`."""
    digest, size = hashlib.sha256(), 0
    with urllib.request.urlopen(url, timeout=60) as response:  # the scheme is checked above
        while chunk := response.read(1024**2):
            size += len(chunk)
            if size > MAX_DETECTOR_BYTES:
                raise DetectorError(f"FID detector '{url}' is over {MAX_DETECTOR_BYTES // 1024**3} GiB; refused")
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        raise DetectorError(f"FID detector '{url}' has sha256 {digest.hexdigest()}, not {sha256}; not kept")


def load_detector(path: Path, sha256: str, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript detector in `path`, if its bytes have `sha256`: they are read once, hashed, and loaded
    from memory, so the file cannot change between the check and the load."""
    data = read_bounded(path, MAX_DETECTOR_BYTES)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DetectorError(f"FID detector '{path}' has sha256 {actual}, not {sha256} (replaced since the sweep was validated?)")
    with warnings.catch_warnings():
        # torch >= 2.9 flags TorchScript as deprecated; loading still works and is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        # TorchScript runs the program the file holds: this is the user's own detector, named in their sweep
        # file and checked against its sha256 here, never a file from the sweep's storage.
        detector = torch.jit.load(io.BytesIO(data), map_location=device)
    return detector.eval()


def quantize(x: Tensor) -> Tensor:
    """Samples in [-1, 1] as the uint8 images EDM measures: (x * 127.5 + 128).clip(0, 255), truncated."""
    return (x.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def detector_features(detector: Callable[..., Tensor], images: Tensor, device: str | torch.device) -> Tensor:
    """(N, D) features of uint8 (N, C, H, W) images, C = 1 (repeated to RGB) or 3."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"FID needs uint8 NCHW images with 1 or 3 channels, got {images.dtype} of shape {tuple(images.shape)}")
    x = images.to(device)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    with torch.no_grad():
        features = detector(x, return_features=True)
    if not isinstance(features, Tensor) or features.ndim != 2 or features.shape[0] != len(x):
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise DetectorError(f"the FID detector returned {shape} for {len(x)} images; expected (N, D) features")
    return features


def batches(x: Tensor, size: int) -> Iterator[Tensor]:
    return (x[i : i + size] for i in range(0, len(x), size))


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


class FeatureMoments:
    """Mean and covariance of features met batch by batch, so that 50,000 x 2048 features are never held at
    once: sums of the features and of their outer products in float64, each feature shifted by the first one
    seen (which keeps the final subtraction of n mu mu^T from cancelling the covariance away)."""

    def __init__(self) -> None:
        self.count = 0
        self._shift: Tensor | None = None
        self._sum: Tensor | None = None
        self._outer: Tensor | None = None

    def add(self, features: Tensor) -> None:
        f = features.detach().reshape(len(features), -1).to(torch.float64)
        if self._shift is None:
            self._shift = f[0].clone()
            self._sum = torch.zeros_like(self._shift)
            self._outer = torch.zeros(len(self._shift), len(self._shift), dtype=torch.float64, device=f.device)
        assert self._sum is not None and self._outer is not None
        f = f - self._shift
        self._sum += f.sum(dim=0)
        self._outer += f.T @ f
        self.count += len(f)

    def stats(self) -> FidStats:
        """The fit so far (needs two features at least: a covariance of one is undefined)."""
        if self.count < 2 or self._shift is None or self._sum is None or self._outer is None:
            raise ValueError(f"FID needs at least 2 images, got {self.count}")
        n = self.count
        mean = self._sum / n
        cov = (self._outer - n * torch.outer(mean, mean)) / (n - 1)
        return FidStats((mean + self._shift).cpu().numpy(), cov.cpu().numpy(), n)


def image_stats(detector: Callable[..., Tensor], images: Iterable[Tensor], device: str | torch.device) -> FidStats:
    """The feature statistics of uint8 image batches."""
    moments = FeatureMoments()
    for batch in images:
        moments.add(detector_features(detector, batch, device))
    return moments.stats()


def fid(samples: FidStats, reference: FidStats) -> float:
    """The Frechet distance of two fits in float64 (scipy's sqrtm with the usual eps fallback)."""
    if samples.mu.shape != reference.mu.shape:
        raise ValueError(
            f"the detector gives {samples.mu.shape[0]} features but the reference statistics have {reference.mu.shape[0]} "
            "(computed with another detector?)"
        )
    return frechet_distance(samples.mu, samples.sigma, reference.mu, reference.sigma)


# --------------------------------------------------------------------------------------------
# Reference statistics of a dataset split, cached by content
# --------------------------------------------------------------------------------------------


def split_images(dataset: ImageDataset, split: str) -> Tensor:
    """The uint8 images of a split, as stored: no augmentation (no flips)."""
    return getattr(dataset, _SPLIT_IMAGES[split])


def reference_key(images: Tensor, detector_sha256: str) -> str:
    """The content address of a split's statistics: the protocol, the detector's sha256 and the images' own
    bytes, so that other images (another split, other options, a changed folder) or another detector never
    share an entry."""
    digest = hashlib.sha256(f"{FID_PROTOCOL}|{detector_sha256}|{tuple(images.shape)}|".encode())
    flat = images.detach().cpu().contiguous().reshape(-1).numpy()
    step = 64 * 1024**2
    for i in range(0, len(flat), step):
        digest.update(np.ascontiguousarray(flat[i : i + step]).data)
    return digest.hexdigest()[:32]


def cached_reference(folder: Path, key: str, compute: Callable[[], FidStats]) -> tuple[FidStats, bool]:
    """The statistics stored as `<folder>/<key>.npz`, and True; or, where there are none that record this key,
    `compute()`'s, written there whole, and False. The folder may be on the sweep's shared storage, so links are
    never followed: a linked folder is refused, a linked or unreadable entry is computed again and replaced."""
    if folder.is_symlink():
        raise FidFileError(f"'{folder}' is a symbolic link; FID reference statistics are kept only in the sweep's own folder")
    path = folder / f"{key}.npz"
    if os.path.lexists(path):
        try:
            stats, recorded = read_stats(path, follow_links=False)
            if recorded == key:
                return stats, True
            warnings.warn(f"'{path}' records key {recorded!r}, not its name's: computed again", stacklevel=2)
        except FidFileError as err:
            warnings.warn(f"ignoring cached FID reference statistics: {err}", stacklevel=2)
    stats = compute()
    write_stats(path, stats, key)
    return stats, False

