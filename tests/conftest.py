"""Shared fixtures: float64 on demand and small Gaussian ground truths."""

from __future__ import annotations

import pytest
import torch

from fm_core.analytic import GaussianData


@pytest.fixture
def float64():
    """Run a test in float64 and restore the default dtype afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def gaussian_2d() -> GaussianData:
    return GaussianData(mu=torch.tensor([1.0, -2.0], dtype=torch.float64), std=0.5)
