"""Matplotlib figures logged as MLflow artifacts (headless: the Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402


def save_loss_curve(losses: list[tuple[int, float]], path: Path, title: str = "") -> Path:
    steps, values = zip(*losses, strict=True)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, values, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log" if min(values) > 0 else "linear")
    ax.set_title(title)
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.15, top=0.9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_samples(samples: dict[str, Tensor], path: Path, title: str = "", max_images: int = 64) -> Path:
    """One panel per solver setting: a density image for 2-D data, an image grid for images."""
    labels = list(samples)
    fig, axes = plt.subplots(1, len(labels), figsize=(2.3 * len(labels), 2.7), squeeze=False)
    for ax, label in zip(axes[0], labels, strict=True):
        x = samples[label]
        if x.ndim == 2 and x.shape[1] == 2:
            # A density image renders in a fraction of a scatter's time (plots are drawn inside each trial).
            counts, _, _ = np.histogram2d(x[:, 0].numpy(), x[:, 1].numpy(), bins=90, range=[[-4.5, 4.5], [-4.5, 4.5]])
            ax.imshow(counts.T, origin="lower", extent=(-4.5, 4.5, -4.5, 4.5), cmap="viridis", interpolation="nearest")
        elif x.ndim == 4:
            n = min(max_images, x.shape[0])
            side = math.ceil(math.sqrt(n))
            c, h, w = x.shape[1:]
            grid = x.new_full((c, side * h, side * w), -1.0)
            for i in range(n):
                r, col = divmod(i, side)
                grid[:, r * h : (r + 1) * h, col * w : (col + 1) * w] = x[i]
            image = ((grid.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).squeeze(-1).numpy()
            ax.imshow(image, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.84, wspace=0.05)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
