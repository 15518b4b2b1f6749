"""Time-conditioned MLP for low-dimensional data (the paper's 2D network: 5 layers of 512, Swish)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """v(x, t): an MLP on [x, t].

    Time enters as an extra input feature, as in the paper's 2D experiments; a scalar t (what ODE
    solvers pass) is broadcast over the batch.
    """

    def __init__(self, dim: int = 2, hidden: int = 512, depth: int = 5, activation: str = "silu") -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"MLP depth must be >= 1, got {depth}")
        acts: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
        if activation not in acts:
            raise ValueError(f"unknown activation '{activation}'; choose one of {', '.join(acts)}")
        layers: list[nn.Module] = []
        width = dim + 1
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), acts[activation]()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)
        self.dim = dim

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        shape = x.shape
        x = x.reshape(shape[0], -1)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.reshape(-1, 1).expand(shape[0], 1) if t.numel() == 1 else t.reshape(shape[0], 1)
        return self.net(torch.cat([x, t], dim=1)).reshape(shape)
