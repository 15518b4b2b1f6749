"""A stand-in for the Inception detector (inception-2015-12-05.pt cannot be had in tests): the same call signature,
`detector(uint8 NCHW RGB images of any size, return_features=True) -> (N, D) features`, resizing inside, on a
small fixed random network, scripted and saved as the real one is."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class StandInDetector(nn.Module):
    def __init__(self, features: int = 16, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.proj = nn.Linear(3 * 8 * 8, features)
            self.head = nn.Linear(features, 10)
        self.num_features = features

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        h = (x.to(torch.float32) - 128.0) / 128.0  # the real network's input scaling
        h = F.interpolate(h, size=(8, 8), mode="bilinear", align_corners=False)
        h = torch.tanh(self.proj(h.flatten(1)) * 2.0)
        return h if return_features else self.head(h).softmax(dim=1)


def save_stand_in_detector(path: Path, features: int = 16, seed: int = 0) -> str:
    """Script and save a stand-in detector at `path`; returns the file's sha256."""
    torch.jit.script(StandInDetector(features, seed).eval()).save(str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()
