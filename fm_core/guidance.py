"""Classifier-free guidance (Ho & Salimans 2022) for class-conditional models of any objective.

Training drops each label to the null class (index `num_classes` of the model's label embedding) with
probability `label_dropout`, so one network learns both v(x, t | y) and the unconditional v(x, t). Sampling
at guidance scale w integrates

    v_w(x, t | y) = v(x, t) + w (v(x, t | y) - v(x, t)),

so w = 1 is the conditional field itself, w = 0 the unconditional one, and w > 1 pushes samples towards their
class. For score and noise objectives the same combination applies to the network's output (the score is
linear in it), which is how guidance is used with diffusion models. Scales are an evaluation axis: every
scale is evaluated from one training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

Network = Callable[[Tensor, Tensor], Tensor]


def null_labels(labels: Tensor, num_classes: int) -> Tensor:
    return torch.full_like(labels, num_classes)


def drop_labels(labels: Tensor, probability: float, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """Labels with each one replaced by the null class with `probability` (drawn on the CPU generator)."""
    if probability <= 0:
        return labels
    dropped = torch.rand(labels.shape, generator=generator) < probability
    return torch.where(dropped.to(labels.device), null_labels(labels, num_classes), labels)


def sampling_labels(n: int, num_classes: int, device: torch.device | str = "cpu") -> Tensor:
    """The classes samples are drawn for: balanced and fixed (0, 1, ..., K-1, 0, 1, ...), like the noise."""
    return torch.arange(n, device=device) % num_classes


def conditioned(model: nn.Module, labels: Tensor) -> Network:
    """The network with its labels bound: what an objective's loss or field calls as model(x, t)."""
    return lambda x, t: model(x, t, labels)


def guided(model: nn.Module, labels: Tensor, scale: float, num_classes: int) -> Network:
    """The network under guidance scale `scale` for these labels: one forward pass at w = 0 or 1, two else."""
    null = null_labels(labels, num_classes)
    if scale == 1.0:
        return conditioned(model, labels)
    if scale == 0.0:
        return conditioned(model, null)

    def network(x: Tensor, t: Tensor) -> Tensor:
        unconditional = model(x, t, null)
        return unconditional + scale * (model(x, t, labels) - unconditional)

    return network
