"""Sweeps run by the test's own process on one local Ray shared by a test module (`orchestrator.run_sweep`).

A sweep run as `fmx sweep` costs a new interpreter's imports (~4 s of CPU) and a local Ray's start (~6 s of
CPU in Ray's own processes) before its first trial; on this 2-core machine, where the suite is CPU-bound,
that was most of what a test of a small sweep's records spent. `run_sweep` runs on a Ray its caller started
and leaves it running, so a module's sweeps share one (a real local Ray, started as `fmx sweep` starts its
own). Tests of what the command line prints, exits with or leaves behind keep running `fmx` itself.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from rich.console import Console

from orchestrator import run_sweep
from orchestrator.outcome import SweepOutcome
from orchestrator.tune_pass import init_ray
from tests.cli_helpers import FMX_CACHE


@contextlib.contextmanager
def module_ray() -> Iterator[ModuleType]:
    """A local Ray in this process, its files in a short private temp dir, stopped and removed at the end. Its
    trials see the environment `fmx_env` gives the console script's (the digits classifier's cache among it)."""
    import ray

    tmp = tempfile.mkdtemp(prefix="fmxray", dir="/tmp")  # Ray's socket paths must stay short
    wanted = {"RAY_TMPDIR": tmp, "FMX_CACHE_DIR": FMX_CACHE}
    old = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)  # before Ray starts: its workers inherit this process's environment then
    try:
        init_ray(None)
        yield ray
    finally:
        ray.shutdown()
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(tmp, ignore_errors=True)


def sweep_here(file: Path, resume: bool = False) -> tuple[SweepOutcome, str]:
    """`fmx sweep FILE [--resume]` in FILE's folder with the embedded store (./mlflow.db) there, on this
    process's Ray: the outcome and the progress lines the command prints on stderr."""
    log = io.StringIO()
    with contextlib.chdir(file.parent):
        outcome = run_sweep(file.name, f"sqlite:///{file.parent / 'mlflow.db'}", resume=resume,
                            console=Console(file=log, soft_wrap=True, width=200))  # fmt: skip
    return outcome, log.getvalue()
