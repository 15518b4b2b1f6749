"""A random-weight stand-in for FID's Inception detector, of about its cost, for timing the FID protocol where
inception-2015-12-05.pt cannot be fetched (a GPU machine without network).

It has the real detector's call signature, `detector(uint8 NCHW RGB images of any size, return_features=True)
-> (N, features)`, resizes to 299 x 299 inside as the real one does, and is scripted and saved as the real one
is, so fmx loads it through fm_core.fid.load_detector (sha256 verified). Its body is a plain strided conv stack
sized to Inception-v3's arithmetic at 299 x 299 (its model cards list 5.7 G multiply-adds, 11.5 GFLOPs, and
23.8M parameters; this one: 11.5 GFLOPs by PyTorch's FlopCounterMode, 21.6M parameters with its 1008-way head),
not to its architecture (Inception's many small branches may run less efficiently on a GPU than these few wide
convolutions): its timings say roughly what FID's detector costs, its values mean nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unet_throughput import forward_flops

#: (output channels, stride) of each 3x3 convolution; then a 1x1 to the features and a global average pool.
BODY = ((32, 2), (64, 2), (192, 2), (384, 1), (192, 1), (768, 2), (768, 1), (1280, 2))


class InceptionLikeStandIn(nn.Module):
    """`width` scales every convolution's channels and `resize` the side images are resized to: --quick uses a
    narrow, small one that a CPU runs in seconds."""

    def __init__(self, features: int = 2048, resize: int = 299, width: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for out, stride in BODY:
                out = max(8, round(out * width))
                layers += [nn.Conv2d(channels, out, 3, stride=stride, padding=1), nn.ReLU()]
                channels = out
            layers.append(nn.Conv2d(channels, features, 1))
            for layer in layers:
                if isinstance(layer, nn.Conv2d):  # keeps the activations' scale through the stack
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)
            self.head = nn.Linear(features, 1008)  # the real network's 1008 logits (unused by FID)
        self.body = nn.Sequential(*layers)
        self.resize = resize

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        h = (x.to(torch.float32) - 128.0) / 128.0  # the real network's input scaling
        h = F.interpolate(h, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        h = self.body(h).mean(dim=(2, 3))
        return h if return_features else self.head(h).softmax(dim=1)


def flops_per_image(model: nn.Module, side: int = 32) -> float:
    """Floating-point operations of one `side` x `side` image's features (unet_throughput.forward_flops)."""
    return forward_flops(lambda: model(torch.zeros(1, 3, side, side, dtype=torch.uint8), return_features=True))


def save_standin(model: InceptionLikeStandIn, path: Path) -> str:
    """Script and save `model` at `path` as the real detector is shipped; returns the file's sha256."""
    torch.jit.script(model.eval()).save(str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()
