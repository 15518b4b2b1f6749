"""FID's files: reference statistics as the `.npz` with `mu` and `sigma` that EDM and clean-fid publish, read
with bounds and written whole; the detector's sha256 and where a detector may come from. NumPy only, so that
`fmx validate` reads a user's statistics file and hashes a detector without importing PyTorch.

Such a file may come from elsewhere (a download, the sweep's shared storage), so reading it never unpickles
(`allow_pickle=False`), never follows a link where told not to, and refuses a file or a member that would
inflate beyond MAX_STATS_BYTES before NumPy decompresses it.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fm_core.cache import atomic_write

#: A 2048-d Inception fit is 32 MiB (sigma in float64); eight times that allows wider features, not a bomb.
MAX_STATS_BYTES = 256 * 1024**2
_CHUNK = 1024**2
#: The Inception file is 95 MiB; a detector twenty times that is a mistake.
MAX_DETECTOR_BYTES = 2 * 1024**3
#: The schemes a detector may be fetched from (file:// reads a local copy through the same checks).
URL_SCHEMES = ("https", "http", "file")


def is_url(text: str) -> bool:
    """A detector named by URL (downloaded once, with its sha256 given) rather than by local path."""
    return "://" in text


class FidFileError(ValueError):
    """A statistics or detector file that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class FidStats:
    """A Gaussian fit of detector features: mean (D,) and covariance (D, D) in float64, of `count` images
    (None where a file does not say)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None = None

    @property
    def digest(self) -> str:
        """16 hex digits of sha256 over the shape and float64 bytes: rows measured against the same statistics
        carry the same digest, whichever file or cache they came from."""
        h = hashlib.sha256(f"{self.mu.shape[0]}:".encode())
        h.update(np.ascontiguousarray(self.mu, dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(self.sigma, dtype="<f8").tobytes())
        return h.hexdigest()[:16]


def sha256_file(path: Path, limit: int | None = None) -> str:
    """The file's sha256 (hex), read in chunks; FidFileError beyond `limit` bytes."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            size += len(chunk)
            if limit is not None and size > limit:
                raise FidFileError(f"'{path}' is over {limit // 1024**2} MiB")
            h.update(chunk)
    return h.hexdigest()


def read_bounded(path: Path, limit: int, follow_links: bool = True) -> bytes:
    """The whole of a regular file of at most `limit` bytes, read once (what is checked is what is used);
    with follow_links=False a symbolic link in its place is refused."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        link = not follow_links and os.path.islink(path)
        raise FidFileError(f"'{path}' is a symbolic link; refused" if link else f"cannot read '{path}': {err.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # what was opened, not what the name points at now
        os.close(fd)
        raise FidFileError(f"'{path}' is not a regular file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FidFileError(f"'{path}' is over {limit // 1024**2} MiB")
    return data


def parse_stats(data: bytes, where: str) -> tuple[FidStats, str | None]:
    """The statistics in an `.npz`'s bytes and the cache key it records (None: a file of the field's own
    format, which has none). `where` names the file in every message."""
    buffer = io.BytesIO(data)
    try:
        with zipfile.ZipFile(buffer) as archive:
            inflated = sum(member.file_size for member in archive.infolist())
    except zipfile.BadZipFile:
        raise FidFileError(f"{where}: not an .npz archive (expected NumPy's savez format with 'mu' and 'sigma')") from None
    if inflated > MAX_STATS_BYTES:
        raise FidFileError(f"{where}: its arrays would take {inflated // 1024**2} MiB; at most {MAX_STATS_BYTES // 1024**2} MiB")
    buffer.seek(0)
    try:
        with np.load(buffer, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files if name in ("mu", "sigma", "count", "key")}
    except ValueError as err:  # an object array (would need pickle), a malformed member
        raise FidFileError(f"{where}: unreadable: {err}") from None
    missing = [name for name in ("mu", "sigma") if name not in arrays]
    if missing:
        raise FidFileError(f"{where}: no {' or '.join(missing)} array (it holds {', '.join(sorted(arrays)) or 'neither'})")
    stats = FidStats(_floats(arrays["mu"]), _floats(arrays["sigma"]), _count(arrays.get("count")))
    _check(stats, where)
    key = arrays.get("key")
    return stats, (str(key) if key is not None and key.shape == () and key.dtype.kind == "U" else None)


def read_stats(path: Path, follow_links: bool = True) -> tuple[FidStats, str | None]:
    """`parse_stats` of a file (FidFileError naming it when it is missing, not a regular file, or too big)."""
    return parse_stats(read_bounded(path, MAX_STATS_BYTES, follow_links), f"'{path}'")


def write_stats(path: Path, stats: FidStats, key: str) -> None:
    """Statistics with their cache key, written whole (fm_core.cache.atomic_write), readable as EDM's format."""
    _check(stats, f"'{path}'")
    count = -1 if stats.count is None else stats.count
    atomic_write(path, lambda f: np.savez(f, mu=stats.mu, sigma=stats.sigma, count=np.int64(count), key=np.array(key)))


def _floats(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float64) if array.dtype.kind in "fiu" else array


def _count(array: np.ndarray | None) -> int | None:
    if array is None or array.shape != () or array.dtype.kind not in "iu" or int(array) < 0:
        return None
    return int(array)


def _check(stats: FidStats, where: str) -> None:
    mu, sigma = stats.mu, stats.sigma
    if mu.dtype != np.float64 or sigma.dtype != np.float64:
        raise FidFileError(f"{where}: mu and sigma must be numbers (got {mu.dtype} and {sigma.dtype})")
    if mu.ndim != 1 or mu.shape[0] < 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise FidFileError(f"{where}: mu must have shape (D,) and sigma (D, D); got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise FidFileError(f"{where}: mu or sigma holds NaN or infinity")
