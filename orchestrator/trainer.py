"""Training steps on a `ModelState`: batches (class labels, fault injection), torch.compile, the loss curve and
the values a live view shows. The boundaries at which a trial stops to checkpoint and evaluate are the
training loop's (orchestrator.training_loop)."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from fm_core.couplings import make_coupling
from fm_core.guidance import drop_labels
from fm_core.paired_batches import DrawnBatch, PairedBatches, batch_generator, draw_noise
from fm_core.training import NonFiniteLossError, StepStats, train_step
from orchestrator.model_state import ModelState


class CompiledOrEager(nn.Module):
    """torch.compile(net), which compiles at its first call; if that (or a recompilation) fails, one line says
    why and, with `fallback`, training goes on with `net` itself (else the error ends the trial)."""

    def __init__(self, net: nn.Module, fallback: bool) -> None:
        super().__init__()
        self.net, self.fallback = net, fallback
        self.compiled: Any = torch.compile(net)
        self.failed: str | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # torch._dynamo / inductor errors: many types, one outcome
                self.failed = f"{type(err).__name__}: {err}".strip().splitlines()[0][:300]
                if not self.fallback:
                    raise RuntimeError(f"torch.compile failed ({self.failed}); train.compile_fallback is false") from None
                print(f"fmx: torch.compile failed ({self.failed}); training uncompiled", file=sys.stderr, flush=True)
        return self.net(*args, **kwargs)

    def no_sync(self) -> Any:  # gradient accumulation defers a DDP net's all-reduce; nothing to defer otherwise
        return self.net.no_sync() if hasattr(self.net, "no_sync") else contextlib.nullcontext()


def device_name(device: str) -> str:
    """What trained: `cpu`, or the GPU's product name (`NVIDIA H200`)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return torch.device(device).type


class Trainer:
    """Trains a `ModelState` step by step (the state keeps the step, the loss curve and the seconds spent).

    `rank`: this worker's DDP rank (0 in the trial itself). A coupling that computes a plan (minibatch OT,
    Sinkhorn) draws its batches from `PairedBatches`, per (seed, rank, step) and paired one step ahead on a
    worker thread (`train.coupling_prefetch`); the independent coupling draws from the state's generator."""

    def __init__(self, state: ModelState, rank: int = 0) -> None:
        self.state, self.rank = state, rank
        self._compiled: tuple[nn.Module, nn.Module] | None = None  # (net, its compiled wrapper)
        train = state.config.train
        self.coupling = make_coupling(state.key.coupling, **train.coupling_options.get(state.key.coupling, {}))
        self._pairs: tuple[int, PairedBatches] | None = None  # (its batch size, the source)
        faults = state.config.fault_injection  # fault injection: NaN batches from this step
        self.poison_from = faults.nan_at_step if faults is not None and state.key.trial_id in faults.trials else None

    def train_until(
        self,
        stop_step: int,
        train_model: nn.Module | None = None,
        batch_size: int | None = None,
        on_log: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        """Train from the current step to `stop_step` (train_model may be a DDP wrapper of state.model).
        Every `train.log_every` steps (and at `stop_step`) the loss joins the curve and `on_log(step, values)`
        gets what a live view shows: loss, learning rate, gradient norm, steps/s, examples/s (and the peak
        memory on a GPU)."""
        state, cfg = self.state, self.state.config.train
        net = self._training_net(train_model if train_model is not None else state.model)
        batch = batch_size or cfg.worker_batch
        net.train()
        state.trained_on = device_name(state.device)
        start = time.perf_counter()
        since, since_step = start, state.step
        try:
            while state.step < stop_step:
                x1, labels, noise = self.paired_batch(batch) if self.coupling.computes else (*self.next_batch(batch), None)
                x1 = x1.to(state.device)  # a no-op for image data, already there
                logs = (state.step + 1) % cfg.log_every == 0 or state.step + 1 == stop_step
                stats = train_step(net, state.objective, state.optimizer, x1, state.key.coupling, state.generator,
                                   cfg.grad_clip, measure_grad_norm=logs and on_log is not None, precision=state.precision,
                                   accumulation=cfg.grad_accum, labels=labels, noise=noise)  # fmt: skip
                if state.ema is not None:
                    state.ema.update_parameters(state.model)
                lr = state.scheduler.get_last_lr()[0]
                state.scheduler.step()
                state.step += 1
                if logs:
                    state.losses.append((state.step, stats.loss))
                    if on_log is not None:
                        now = time.perf_counter()
                        on_log(state.step, self._live_values(stats, lr, state.step - since_step, now - since, batch))
                        since, since_step = now, state.step
        except NonFiniteLossError as err:
            raise NonFiniteLossError(f"loss became non-finite at step {state.step + 1}: {err}") from None
        finally:
            state.train_seconds += time.perf_counter() - start
            state.model.eval()

    def next_batch(self, size: int) -> tuple[Tensor, Tensor | None]:
        """A training batch from the state's generator and, for a class-conditional training, its labels (fault
        injection, where the sweep asks for it, poisons the batch from its step on)."""
        x1, labels = self._sample(size, self.state.generator)
        return self._poisoned(x1), labels

    def paired_batch(self, size: int) -> tuple[Tensor, Tensor | None, Tensor]:
        """This step's batch of a coupling that computes: data, labels and the noise paired with the data."""
        if self._pairs is None or self._pairs[0] != size:
            self.close()
            train = self.state.config.train
            source = PairedBatches(lambda step: self._draw(step, size), self.coupling, train.grad_accum, train.coupling_prefetch)
            self._pairs = (size, source)
        batch = self._pairs[1].take(self.state.step)
        return self._poisoned(batch.x1), batch.labels, batch.x0

    def close(self) -> None:
        """Stop the coupling's worker thread, if one runs."""
        if self._pairs is not None:
            self._pairs[1].close()
            self._pairs = None

    def _draw(self, step: int, size: int) -> DrawnBatch:
        """Batch `step` of this rank, before pairing: a function of (seed, rank, step) alone."""
        generator = batch_generator(self.state.key.seed, self.rank, step)
        x1, labels = self._sample(size, generator)
        x1 = x1.to(self.state.device)
        return DrawnBatch(x1, labels, *draw_noise(x1, self.coupling, generator))

    def _sample(self, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Data and, for a class-conditional training, its labels with each dropped to the null class with
        train.label_dropout."""
        state, labels = self.state, None
        if state.num_classes:
            x1, labels = state.dataset.sample_with_labels(size, generator)  # type: ignore[attr-defined]
            labels = drop_labels(labels, float(state.config.train.label_dropout), state.num_classes, generator)
        else:
            x1 = state.dataset.sample(size, generator)
        return x1, labels

    def _poisoned(self, x1: Tensor) -> Tensor:
        poisoned = self.poison_from is not None and self.state.step + 1 >= self.poison_from
        return x1 * math.nan if poisoned else x1

    def _live_values(self, stats: StepStats, lr: float, steps: int, seconds: float, batch: int) -> dict[str, float]:
        values = {"train_loss": stats.loss, "lr": lr}
        if stats.grad_norm is not None:
            values["grad_norm"] = stats.grad_norm
        if seconds > 0:
            values.update(steps_per_second=steps / seconds, examples_per_second=steps * batch / seconds)
        if self.state.device.startswith("cuda"):
            values["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.state.device) / 2**30
        return values

    def _training_net(self, net: nn.Module) -> nn.Module:
        """`net`, compiled once with torch.compile when the sweep asks (the compiled module shares its weights)."""
        train = self.state.config.train
        if not train.compile:
            return net
        if self._compiled is None or self._compiled[0] is not net:
            self._compiled = (net, CompiledOrEager(net, fallback=train.compile_fallback))
        return self._compiled[1]
