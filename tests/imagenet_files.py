"""A small Downsampled ImageNet folder in the official layout (fm_core.downsampled_imagenet), for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fm_core.downsampled_imagenet import HELDOUT_FILE, TRAIN_FILES


def write_imagenet_folder(folder: Path, resolution: int, n: int = 2, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`n` random images (N, 3, r, r) uint8 and labels 1..1000 per file, written as the official files are
    (`data`: rows of channel-planar pixels, `labels`, `mean`); returns each file's images and labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    written = {}
    for name in (*TRAIN_FILES, HELDOUT_FILE):
        images = rng.randint(0, 256, size=(n, 3, resolution, resolution)).astype(np.uint8)
        labels = rng.randint(1, 1001, size=n).astype(np.int64)
        data = images.reshape(n, -1)  # C order: all red, then all green, then all blue, each row-major
        np.savez(folder / name, data=data, labels=labels, mean=data.mean(axis=0))
        written[name] = (images, labels)
    return written


def imagenet_roots(base: Path) -> dict[str, str]:
    """Small folders of both resolutions under `base`, as the variables the shipped sweeps read them from
    (IMAGENET32_ROOT, IMAGENET64_ROOT)."""
    roots = {}
    for resolution in (32, 64):
        write_imagenet_folder(base / f"imagenet{resolution}", resolution)
        roots[f"IMAGENET{resolution}_ROOT"] = str(base / f"imagenet{resolution}")
    return roots
