"""Mixed precision for training and sampling: autocast to bf16 or fp16 (with a gradient scaler for fp16,
whose narrow exponent range underflows small gradients), or plain fp32. Likelihoods never use it: the
log-determinant integrates many small terms, so they stay fp32/fp64 whatever the sweep trains in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from fm_core.names import PRECISION_NAMES

DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
assert tuple(DTYPES) == PRECISION_NAMES


@dataclass
class Precision:
    """A precision on a device type ("cpu", "cuda"); `scaler` is the fp16 GradScaler (state in checkpoints)."""

    name: str = "fp32"
    device_type: str = "cpu"
    scaler: torch.amp.GradScaler | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.name not in DTYPES:
            raise ValueError(f"unknown precision '{self.name}'; choose one of {', '.join(PRECISION_NAMES)}")
        if self.name == "fp16":
            self.scaler = torch.amp.GradScaler(self.device_type)

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES[self.name]

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast to the precision's dtype (a no-op for fp32)."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
