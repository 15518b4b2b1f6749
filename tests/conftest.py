"""Shared fixtures: float64 on demand and small Gaussian ground truths; how tests are spread over workers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from fm_core.analytic import GaussianData


# Two pytest-xdist workers share two cores with the Ray trials they start: a test that computes in its own
# process does it on one thread (as a trial does, cpus_per_worker: 1), not on every core at once.
torch.set_num_threads(1)

# ONE_TRIAL_AT_A_TIME: the sweeps of tests that check what a sweep records, not trials running side by side,
# set `max_concurrent_trials: 1`. The two xdist workers already keep both cores busy, so a second trial at once
# buys such a test no wall time, while its Ray worker costs a process that imports PyTorch, Ray Tune and MLflow
# (about 5 s of CPU; a trial reuses its worker's process, `reuse_actors`). Measured with scripts/sweep_cpu.py
# on test_cells' two-training sweep: 31.2 s of CPU and 18.4 s of wall time at two trials at once, 21.6 s and
# 18.1 s at one. A worker killed beside another, Ctrl-C with two trials running, the killed driver (run one at
# a time, its third trial was killed too soon after its first checkpoint for --resume to find it) and the smoke
# sweeps keep Ray's default of as many trials at once as CPUs.


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The README's test command runs two pytest-xdist workers (`-n 2 --dist loadgroup`): tests go to whichever
    worker is free, one at a time, except that the tests of a module sharing a module-scoped fixture (a Ray
    cluster, a trained checkpoint, a real store) form one group on one worker, so that fixture is built once.
    The slow tests (whole sweeps, marked `slow`) are handed out first and the quick ones fill in behind them, so
    neither worker idles at the end behind the other's last sweep."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order within each kind
    for item in items:
        definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        if any(d.scope == "module" for defs in definitions.values() for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


#: What the suite may leave in the checkout (all git-ignored): the digits classifier's cache (tests.cli_helpers
#: points FMX_CACHE_DIR there, so it is trained once), pytest's cache, byte code, the venv and the egg-info.
CHECKOUT_CACHES = (".fmx_cache/", ".pytest_cache/", "__pycache__/", ".venv/", "fmx.egg-info/")
REPO = Path(__file__).resolve().parent.parent


def _checkout_litter() -> set[str] | None:
    """Untracked and ignored paths of the checkout outside CHECKOUT_CACHES (None: not a git checkout)."""
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if status.returncode != 0:
        return None
    paths = {line[3:] for line in status.stdout.splitlines() if line[:2] in ("??", "!!")}
    return {p for p in paths if not any(p == c or p.endswith("/" + c) or p.startswith(c) for c in CHECKOUT_CACHES)}


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without xdist) checks, once
        session.config.stash[_LITTER] = _checkout_litter()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Tests write into their own temporary folders: anything new in the checkout fails the run."""
    before = session.config.stash.get(_LITTER, None)
    after = _checkout_litter() if before is not None else None
    if before is None or after is None:
        return
    new = sorted(after - before)
    if new:
        session.config.get_terminal_writer().line(f"the tests left files in the checkout: {', '.join(new)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_LITTER = pytest.StashKey[set[str] | None]()


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
