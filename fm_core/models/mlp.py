"""Time-conditioned MLP for low-dimensional data (the paper's 2D network: 5 layers of 512, Swish)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fm_core.models.spec import LABEL_DIM


class MLP(nn.Module):
    """v(x, t): an MLP on [x, t].

    Time enters as an extra input feature, as in the paper's 2D experiments; a scalar t (what ODE
    solvers pass) is broadcast over the batch.
    """

    def __init__(
        self, dim: int = 2, hidden: int = 512, depth: int = 5, activation: str = "silu", num_classes: int = 0,
        label_dim: int = LABEL_DIM,
    ) -> None:  # fmt: skip
        super().__init__()
        if depth < 1:
            raise ValueError(f"MLP depth must be >= 1, got {depth}")
        acts: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
        if activation not in acts:
            raise ValueError(f"unknown activation '{activation}'; choose one of {', '.join(acts)}")
        layers: list[nn.Module] = []
        # A class-conditional MLP (num_classes > 0) also reads a learned embedding of the label; index
        # num_classes is the null label that classifier-free guidance trains with and samples from.
        self.num_classes = num_classes
        self.label_embed = nn.Embedding(num_classes + 1, label_dim) if num_classes else None
        width = dim + 1 + (label_dim if num_classes else 0)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), acts[activation]()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)
        self.dim = dim

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """v(x, t), or v(x, t | y) for a class-conditional MLP (y None: the null label, the unconditional field)."""
        shape = x.shape
        x = x.reshape(shape[0], -1)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.reshape(-1, 1).expand(shape[0], 1) if t.numel() == 1 else t.reshape(shape[0], 1)
        inputs = [x, t]
        if self.label_embed is not None:
            y = torch.full((shape[0],), self.num_classes, device=x.device) if y is None else y
            inputs.append(self.label_embed(y).to(x.dtype))
        return self.net(torch.cat(inputs, dim=1)).reshape(shape)
