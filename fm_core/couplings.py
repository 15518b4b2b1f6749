"""How noise x0 is paired with data x1 inside a batch.

The paper pairs them independently.  Minibatch OT (Tong et al., 2023; Pooladian et al., 2023)
pairs them by an exact optimal assignment on the batch, which straightens the marginal paths
and tends to lower the NFE an adaptive solver needs.  Assignment is a permutation: every noise
row is used exactly once (sampling without replacement), so the x0 marginal is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from fm_core.names import COUPLING_NAMES


def squared_cost(x0: Tensor, x1: Tensor) -> Tensor:
    """Pairwise squared Euclidean cost between flattened rows."""
    a = x0.reshape(x0.shape[0], -1)
    b = x1.reshape(x1.shape[0], -1)
    return torch.cdist(a, b).pow(2)


def ot_permutation(x0: Tensor, x1: Tensor) -> Tensor:
    """Index perm such that (x0[perm[i]], x1[i]) is an exact minimum-cost matching."""
    if x0.shape[0] != x1.shape[0]:
        raise ValueError(f"minibatch OT needs equal batch sizes, got {x0.shape[0]} and {x1.shape[0]}")
    cost = squared_cost(x0.detach(), x1.detach()).to(torch.float64).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty_like(rows)
    perm[cols] = rows
    return torch.as_tensor(perm, device=x0.device, dtype=torch.long)


def couple(name: str, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
    """Return (x0, x1) re-paired according to the coupling `name`."""
    if name == "independent":
        return x0, x1
    if name == "minibatch_ot":
        return x0[ot_permutation(x0, x1)], x1
    raise ValueError(f"unknown coupling '{name}'; choose one of {', '.join(COUPLING_NAMES)}")
