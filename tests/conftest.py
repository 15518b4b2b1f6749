"""Shared fixtures: float64 on demand and small Gaussian ground truths; how tests are spread over workers."""

from __future__ import annotations

import pytest
import torch

from fm_core.analytic import GaussianData


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The README's test command runs two pytest-xdist workers (`-n 2 --dist loadgroup`): tests go to whichever
    worker is free, one at a time, except that the tests of a module sharing a module-scoped fixture (a Ray
    cluster, a trained checkpoint, a real store) form one group on one worker, so that fixture is built once."""
    for item in items:
        definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        if any(d.scope == "module" for defs in definitions.values() for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


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
