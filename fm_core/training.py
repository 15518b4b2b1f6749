"""The training step shared by tests, benchmarks and the distributed orchestrator.

Kept free of any launcher: the orchestrator wraps `train_step` in Ray Train, tests call `fit`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fm_core.couplings import couple
from fm_core.guidance import conditioned
from fm_core.objectives import Objective
from fm_core.precision import Precision

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


def ema_decay_at(updates: int, decay: float, warmup: bool = True) -> float:
    """The EMA's decay at its `updates`-th update (0-based). With warm-up, min(decay, (1 + n) / (10 + n)):
    the early average forgets the random initialisation fast instead of dragging it along for ~1/(1-decay)
    steps (the schedule of TensorFlow's ExponentialMovingAverage with num_updates, used by ADM's lineage)."""
    return min(decay, (1 + updates) / (10 + updates)) if warmup else decay


def make_ema(model: nn.Module, decay: float, warmup: bool = True) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of `model`'s parameters and buffers (torch.optim.swa_utils): the first
    update copies the weights, each later one is avg <- d * avg + (1 - d) * weights with d = ema_decay_at(n).
    Its state_dict holds the average and the update count, so a resumed trial continues the same average."""

    def average(averages: list[Tensor], currents: list[Tensor], updates: Tensor | int) -> None:
        d = ema_decay_at(int(updates), decay, warmup)  # one host sync a step, not one per tensor
        floats = [(a, c) for a, c in zip(averages, currents, strict=True) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - d)
        for a, c in zip(averages, currents, strict=True):  # counters and masks are copied, not averaged
            if not a.is_floating_point():
                a.copy_(c)

    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=average, use_buffers=True)


@dataclass(frozen=True)
class StepStats:
    """What one optimizer step measured: the loss, and the gradients' global L2 norm (before clipping) where
    it was asked for or computed anyway by clipping."""

    loss: float
    grad_norm: float | None = None


def train_step(
    model: nn.Module,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    x1: Tensor,
    coupling: str = "independent",
    generator: torch.Generator | None = None,
    grad_clip: float | None = None,
    measure_grad_norm: bool = False,
    precision: Precision | None = None,
    accumulation: int = 1,
    labels: Tensor | None = None,
    noise: Tensor | None = None,
) -> StepStats:
    """One optimizer step on a data batch x1 with fresh noise (its loss, and the gradient norm where measured),
    raising on a NaN/inf loss. Under `precision`
    the forward pass autocasts (bf16/fp16) and fp16's scaler scales the loss; the gradient norm is measured
    on unscaled gradients. With `accumulation` > 1 the batch is split into that many micro-batches whose
    gradients add up to the whole batch's mean (a DDP model synchronizes only on the last). `noise`: x0 drawn and
    paired with x1 row by row already (fm_core.paired_batches, which computes a coupling off this thread); the
    coupling is then not applied again. None: fresh noise from `generator`, coupled here."""
    precision = precision or Precision()
    scaler = precision.scaler
    paired = noise is not None
    x0 = noise if paired else torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device="cpu").to(x1.device)
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    label_chunks = labels.chunk(accumulation) if labels is not None else [None] * len(x1.chunk(accumulation))
    chunks = list(zip(x0.chunk(accumulation), x1.chunk(accumulation), label_chunks, strict=True))
    for i, (z, data, y) in enumerate(chunks):
        if not paired:  # pairs noise to data: the labels stay with their data
            z, data = couple(coupling, z, data, generator)
        net = model if y is None else conditioned(model, y)
        deferred = i < len(chunks) - 1 and hasattr(model, "no_sync")  # DDP: all-reduce once, after the last
        with model.no_sync() if deferred else contextlib.nullcontext():
            with precision.autocast():
                loss = objective.loss(net, z, data, generator=generator)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(f"loss is {value}")
            share = len(data) / len(x1)  # micro-batch means, weighted: the gradient of the whole batch's mean
            total += value * share
            (scaler.scale(loss * share) if scaler is not None else loss * share).backward()
    value = total
    norm = None
    if grad_clip is not None or measure_grad_norm:
        if scaler is not None:
            scaler.unscale_(optimizer)
        norm = float(nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip is not None else math.inf))
    if scaler is not None:
        scaler.step(optimizer)  # skipped where the scaled gradients overflowed; the scale then shrinks
        scaler.update()
    else:
        optimizer.step()
    return StepStats(value, norm)


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
        losses.append(train_step(model, objective, optimizer, sample_batch(batch_size, generator), coupling, generator).loss)
        scheduler.step()
    model.eval()
    return FitResult(losses=losses)
