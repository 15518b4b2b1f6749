"""Each sample's own NFE: the batch solve's adaptive step control reads one error norm over the whole batch
(torchdiffeq's RMS over every coordinate), so its NFE depends on the batch's size and company. Solving samples
one at a time gives each its own step control and so its own NFE.

The solves are torchdiffeq's, one sample per call, the same code as the batch solve: a batch of one is the
batch solve, so the per-sample NFE and the batch NFE measure the same thing, and each sample's end state
agrees with the batch's within the tolerance. torchode (Lienen and Günnemann 2022) runs per-sample control in
one batched solve, but its controller is not torchdiffeq's (a sample alone took another NFE than torchdiffeq's
in 29 of 160 checks) and its `n_f_evals` counts the batch's evaluations, so it would not stand beside the batch
NFE; the loop costs one solve per sample, which is why eval.per_sample_nfe solves only a subset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fm_core.sampling import sample
from fm_core.solvers import SolverSetting

#: The field a sample is pushed along, given its index (a class-conditional model's field depends on its label).
FieldOfSample = Callable[[int], Callable[[Tensor, Tensor], Tensor]]


@dataclass(frozen=True)
class PerSampleSolve:
    """Each sample's NFE (shape (N,), int64) and end state, solved alone."""

    nfe: Tensor
    x: Tensor

    def summary(self) -> dict[str, float]:
        """The NFE distribution: mean, median and 90th percentile (linear interpolation between samples)."""
        nfe = self.nfe.double()
        return {
            "mean": float(nfe.mean()),
            "median": float(torch.quantile(nfe, 0.5)),
            "p90": float(torch.quantile(nfe, 0.9)),
        }


def solve_each(field_of: FieldOfSample, x0: Tensor, solver: SolverSetting, t_span: tuple[float, float]) -> PerSampleSolve:
    """Solve every row of x0 on its own (no gradients)."""
    solutions = [sample(field_of(i), x0[i : i + 1], solver, t_span) for i in range(len(x0))]
    return PerSampleSolve(
        nfe=torch.tensor([s.nfe for s in solutions], dtype=torch.int64), x=torch.cat([s.x for s in solutions])
    )
