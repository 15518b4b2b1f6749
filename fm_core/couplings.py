"""How noise x0 is paired with data x1 inside a batch: one class per coupling, registered by name.

The paper pairs them independently.  Minibatch OT (Tong et al., 2023; Pooladian et al., 2023) pairs them by an
exact optimal assignment on the batch, which straightens the marginal paths and tends to lower the NFE an
adaptive solver needs; Sinkhorn pairs them by an entropic OT plan (Cuturi, 2013), between the two as its
regularisation goes from 0 to infinity.  Every coupling keeps each data row (and its label) in place and gives
it a noise row: `noise_index(x0, x1, u)[j]` is the noise row paired with x1[j].

What a coupling can do sits beside its name as class attributes (`computes`, `draws`, its options as dataclass
fields with their ranges), and the sweep validation reads them from `COUPLINGS`. Like fm_core.paths, this module
imports PyTorch at first use: the sweep driver and `fmx validate` read the names and options without it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from fm_core.lazy import Registered, option, torch

if TYPE_CHECKING:
    from torch import Tensor

#: Every coupling by name, in the order they are defined (filled as each subclass is created).
COUPLINGS: dict[str, type[Coupling]] = {}


def squared_cost(x0: Tensor, x1: Tensor) -> Tensor:
    """Pairwise squared Euclidean cost between flattened rows: cost[i, j] = |x0[i] - x1[j]|^2."""
    a = x0.reshape(x0.shape[0], -1)
    b = x1.reshape(x1.shape[0], -1)
    return torch.cdist(a, b).pow(2)


def _same_size(x0: Tensor, x1: Tensor) -> None:
    if x0.shape[0] != x1.shape[0]:
        raise ValueError(f"minibatch OT needs equal batch sizes, got {x0.shape[0]} and {x1.shape[0]}")


class Coupling(Registered, ABC):
    """A way to pair a batch of noise with a batch of data, row for row."""

    _registry = COUPLINGS
    _family = "couplings"
    _called = "coupling"

    name: ClassVar[str] = "coupling"
    #: Whether pairing computes something on the batch (a plan). Such a coupling is computed off the training
    #: thread, one batch ahead (fm_core.paired_batches); the independent coupling costs nothing to run inline.
    computes: ClassVar[bool] = True
    #: Whether it samples from a plan: it is then given one uniform number per data row, drawn with the batch,
    #: so that its pairs depend on the seed alone, not on the thread or the time at which they were computed.
    draws: ClassVar[bool] = False
    #: What the tables append to a method's name ("FM-OT +mbOT"); "" for the paper's independent pairs.
    label: ClassVar[str] = ""

    @abstractmethod
    def noise_index(self, x0: Tensor, x1: Tensor, u: Tensor | None = None) -> Tensor:
        """For each data row j, the noise row paired with it (a long tensor on x1's device); `u`: one uniform
        number in [0, 1) per data row where the coupling `draws`."""


@dataclass(frozen=True)
class Independent(Coupling):
    """The paper's: noise and data as drawn, x0[j] with x1[j]."""

    name: ClassVar[str] = "independent"
    computes: ClassVar[bool] = False

    def noise_index(self, x0: Tensor, x1: Tensor, u: Tensor | None = None) -> Tensor:
        return torch.arange(x1.shape[0], device=x1.device)


@dataclass(frozen=True)
class MinibatchOT(Coupling):
    """The exact assignment of least total squared distance (scipy's linear_sum_assignment, float64 on the
    CPU; it releases the GIL, so a background thread computes it beside the training step). A permutation:
    every noise row is used once (sampling without replacement), so the x0 marginal is unchanged."""

    name: ClassVar[str] = "minibatch_ot"
    label: ClassVar[str] = "+mbOT"

    def noise_index(self, x0: Tensor, x1: Tensor, u: Tensor | None = None) -> Tensor:
        return ot_permutation(x0, x1)


@dataclass(frozen=True)
class Sinkhorn(Coupling):
    """The entropic OT plan between the batches' uniform weights (POT's log-domain Sinkhorn on the batch's own
    device and dtype), sampled row by row: each data row keeps its place and draws its noise row from the
    plan's column, pi(i | j), so noise rows may repeat (a plan, not a permutation; torchcfm draws (i, j) pairs
    from the whole plan instead, repeating data rows too). `reg` is in the cost's units (squared distance, as in
    POT and torchcfm): reg -> 0 approaches the exact assignment, reg -> infinity the independent coupling. It
    stops after `max_iter` iterations or where the columns' sums are within `tol` (L2) of 1/n. Small `reg` costs
    hundreds of iterations: cheap on a GPU, slower than the exact assignment on a CPU (docs/benchmarks.md)."""

    reg: float = option(0.05, 0.0, 1e6, open_low=True)
    max_iter: float = option(1000, 1, 100_000)
    tol: float = option(1e-5, 0.0, 1.0, open_low=True)
    name: ClassVar[str] = "sinkhorn"
    draws: ClassVar[bool] = True
    label: ClassVar[str] = "+Sinkhorn"

    def plan(self, x0: Tensor, x1: Tensor) -> Tensor:
        """The (n, n) plan, rows noise and columns data, each summing to about 1/n."""
        import ot  # POT: imported by the trainings that use it, not by `fmx validate`

        _same_size(x0, x1)
        cost = squared_cost(x0.detach(), x1.detach())
        weights = torch.full((x1.shape[0],), 1.0 / x1.shape[0], dtype=cost.dtype, device=cost.device)
        return ot.sinkhorn(weights, weights, cost, self.reg, method="sinkhorn_log",
                           numItermax=int(self.max_iter), stopThr=self.tol, warn=False)  # fmt: skip

    def noise_index(self, x0: Tensor, x1: Tensor, u: Tensor | None = None) -> Tensor:
        if u is None:
            raise ValueError("the sinkhorn coupling samples its plan: it needs one uniform number per data row")
        columns = self.plan(x0, x1).T  # row j: the plan's column j, the unnormalised pi(. | j)
        cdf = columns.cumsum(dim=1)
        target = u.to(cdf.device, cdf.dtype).unsqueeze(1) * cdf[:, -1:]
        return torch.searchsorted(cdf.contiguous(), target).squeeze(1).clamp_max(x0.shape[0] - 1)


def ot_permutation(x0: Tensor, x1: Tensor) -> Tensor:
    """Index perm such that (x0[perm[i]], x1[i]) is an exact minimum-cost matching."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    _same_size(x0, x1)
    cost = squared_cost(x0.detach(), x1.detach()).to(torch.float64).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty_like(rows)
    perm[cols] = rows
    return torch.as_tensor(perm, device=x0.device, dtype=torch.long)


def make_coupling(name: str, **options: float) -> Coupling:
    """The coupling `name` with its options (the sweep's `train.coupling_options[name]`)."""
    return Coupling.by_name(name, **options)


def pair(coupling: Coupling, x0: Tensor, x1: Tensor, u: Tensor | None = None, chunks: int = 1) -> Tensor:
    """x0 re-ordered so that row j goes with x1[j], coupled within each of `chunks` micro-batches (as
    torch.chunk splits them: what one forward pass trains on) rather than across the whole batch."""
    if not coupling.computes:
        return x0
    us = u.chunk(chunks) if u is not None else [None] * len(x1.chunk(chunks))
    parts, offset = [], 0
    for a, b, v in zip(x0.chunk(chunks), x1.chunk(chunks), us, strict=True):
        parts.append(coupling.noise_index(a, b, v) + offset)
        offset += b.shape[0]
    return x0[torch.cat(parts)]


def couple(name: str, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Return (x0, x1) re-paired according to the coupling `name` (with its default options; a coupling that
    samples draws its uniforms from `generator`)."""
    coupling = make_coupling(name)
    if not coupling.computes:
        return x0, x1
    u = torch.rand(x1.shape[0], generator=generator) if coupling.draws else None
    return pair(coupling, x0, x1, u), x1
