"""What the shipped image sweeps read from the environment, made real in a test folder: CIFAR-10's folder (it only
has to exist), ImageNet folders holding small files in the official layout (validation reads their headers), and
a stand-in FID detector (the real Inception cannot be had here)."""

from __future__ import annotations

from pathlib import Path

from tests.fid_helpers import save_stand_in_detector
from tests.imagenet_files import imagenet_roots


def stand_in_detector(folder: Path) -> Path:
    """A scripted stand-in saved where the sweeps' FID_DETECTOR points."""
    path = folder / "inception-2015-12-05.pt"
    save_stand_in_detector(path)
    return path


def shipped_sweeps_env(folder: Path) -> dict[str, str]:
    """Every variable the shipped sweeps use, pointing at files made under `folder`."""
    return {"CIFAR10_ROOT": str(folder), "FID_DETECTOR": str(stand_in_detector(folder)), **imagenet_roots(folder / "data")}
