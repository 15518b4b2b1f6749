"""Training batches whose coupling is computed one step ahead, on a background thread.

An exact minibatch OT assignment takes about as long as a training step of the paper's 2-D network, and on a
GPU the device would wait for it. So batch k + 1 is drawn and handed to a worker thread while step k trains
(scipy's linear_sum_assignment and PyTorch's kernels release the GIL, so the thread runs beside the step).

Batch k is a function of (seed, rank, k) alone: its data, noise and the coupling's uniforms come from a
generator seeded with those three, never from a generator the training step also draws from. So the prefetched
pairs are the same as the inline ones, a resumed training draws the same batches as an uninterrupted one
without any state in its checkpoint, and each DDP rank draws its own.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fm_core.couplings import Coupling, pair


@dataclass(frozen=True)
class PairedBatch:
    """One step's batch: noise `x0` paired row by row with data `x1` (and its class labels, if any)."""

    x0: Tensor
    x1: Tensor
    labels: Tensor | None = None


@dataclass(frozen=True)
class DrawnBatch:
    """What a step draws before pairing: data (on the training device), labels, noise and the coupling's
    uniforms (None where it samples nothing)."""

    x1: Tensor
    labels: Tensor | None
    x0: Tensor
    u: Tensor | None


def batch_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The generator batch `step` of worker `rank` draws from (independent streams via numpy's SeedSequence)."""
    state = np.random.SeedSequence((seed, rank, step)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def draw_noise(x1: Tensor, coupling: Coupling, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """Gaussian noise shaped like x1 (drawn on the CPU, so the same on every device) and the coupling's
    uniforms, after the data from the same generator."""
    x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device="cpu").to(x1.device)
    u = torch.rand(x1.shape[0], generator=generator, dtype=torch.float64) if coupling.draws else None
    return x0, u


class PairedBatches:
    """Batch by step number: `take(k)` returns batch k paired and, with `prefetch`, starts pairing batch k + 1
    on the worker thread before it returns. `draw(k)` runs on the caller's thread (the dataset is not shared
    with the worker); only the coupling runs on the worker, one batch at a time, in order."""

    def __init__(
        self, draw: Callable[[int], DrawnBatch], coupling: Coupling, chunks: int = 1, prefetch: bool = True
    ) -> None:
        self.draw, self.coupling, self.chunks = draw, coupling, chunks
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fmx-coupling") if prefetch else None
        self._pending: tuple[int, Future[PairedBatch]] | None = None

    def _pair(self, drawn: DrawnBatch) -> PairedBatch:
        return PairedBatch(pair(self.coupling, drawn.x0, drawn.x1, drawn.u, self.chunks), drawn.x1, drawn.labels)

    def take(self, step: int) -> PairedBatch:
        """Batch `step`, paired (waiting for the worker where it is still pairing it)."""
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == step:
            batch = pending[1].result()
        else:  # the first batch, or a step out of order (a restore): computed here, as inline
            if pending is not None:
                pending[1].cancel()
            batch = self._pair(self.draw(step))
        if self._pool is not None:
            self._pending = (step + 1, self._pool.submit(self._pair, self.draw(step + 1)))
        return batch

    def close(self) -> None:
        """Stop the worker (a batch it is pairing is finished first and dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._pending = None, None
