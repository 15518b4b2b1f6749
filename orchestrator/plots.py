"""Matplotlib figures logged as MLflow artifacts (headless: the Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402


def save_loss_curve(losses: list[tuple[int, float]], path: Path, title: str = "") -> Path:
    steps, values = zip(*losses, strict=True)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, values, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log" if min(values) > 0 else "linear")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_samples(samples: dict[str, Tensor], path: Path, title: str = "", max_images: int = 64) -> Path:
    """One panel per solver setting: a scatter for 2-D data, an image grid for images."""
    labels = list(samples)
    fig, axes = plt.subplots(1, len(labels), figsize=(3 * len(labels), 3.2), squeeze=False)
    for ax, label in zip(axes[0], labels, strict=True):
        x = samples[label]
        if x.ndim == 2 and x.shape[1] == 2:
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
            ax.set_xlim(-4.5, 4.5)
            ax.set_ylim(-4.5, 4.5)
            ax.set_aspect("equal")
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
