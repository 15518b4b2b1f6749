"""The training step shared by tests, benchmarks and the distributed orchestrator.

Kept free of any launcher: the orchestrator wraps `train_step` in Ray Train, tests call `fit`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fm_core.couplings import couple
from fm_core.objectives import Objective

SCHEDULES = ("constant", "poly")


class NonFiniteLossError(RuntimeError):
    """Raised when the loss becomes NaN or infinite, so a sweep can record why a trial failed."""


def lr_lambda(schedule: str, warmup: int, total: int, power: float = 1.0) -> Callable[[int], float]:
    """Multiplier on the base lr: linear warm-up, then constant or polynomial decay to 0 (paper Table 3)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule '{schedule}'; choose one of {', '.join(SCHEDULES)}")

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        span = max(total - warmup, 1)
        return max(0.0, 1.0 - (step - warmup) / span) ** power

    return factor


def make_optimizer(
    model: nn.Module, lr: float, schedule: str = "constant", warmup: int = 0, total_steps: int = 1
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam (0.9, 0.999), no weight decay, as in the paper, with its lr schedule."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(schedule, warmup, total_steps))


def train_step(
    model: nn.Module,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    x1: Tensor,
    coupling: str = "independent",
    generator: torch.Generator | None = None,
    grad_clip: float | None = None,
) -> float:
    """One optimizer step on a data batch x1 with fresh noise; returns the loss, raising on NaN/inf."""
    x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device="cpu").to(x1.device)
    x0, x1 = couple(coupling, x0, x1)
    loss = objective.loss(model, x0, x1, generator=generator)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLossError(f"loss is {value}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return value


@dataclass
class FitResult:
    losses: list[float]


def fit(
    model: nn.Module,
    objective: Objective,
    sample_batch: Callable[[int, torch.Generator], Tensor],
    steps: int,
    batch_size: int,
    lr: float = 1e-3,
    coupling: str = "independent",
    seed: int = 0,
) -> FitResult:
    """A plain single-process training loop (used by tests and benchmarks)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer, scheduler = make_optimizer(model, lr)
    losses = []
    model.train()
    for _ in range(steps):
        losses.append(train_step(model, objective, optimizer, sample_batch(batch_size, generator), coupling, generator))
        scheduler.step()
    model.eval()
    return FitResult(losses=losses)
