"""The function Ray Tune runs for each training trial, importable without PyTorch, MLflow or matplotlib.

The driver only needs a reference to it. When the driver imported the trial's code itself, PyTorch's
import competed with Ray's start for the two cores on the path to the first trial; the trial actors
import it anyway, once each, in their first trial (counted in that trial's `trial_seconds`).
"""

from __future__ import annotations

import time
from typing import Any


def training_trial(params: dict[str, Any], setup: dict[str, Any] | None = None) -> None:
    """Tune function trainable for one training configuration. Its name names Tune's trial folders, and
    `--resume` finds the trainable by it: keep it. `params` is the trial's point of the grid (its training
    key), `setup` what every trial shares (the validated sweep, settings, where to log), handed over by
    `tune.with_parameters` so that it never lands in Tune's params.json / params.pkl on storage (a path
    expanded from `${VAR}`, a tracking URI with credentials)."""
    started_at, started = time.time(), time.perf_counter()
    from orchestrator.trainable import run_training_trial

    run_training_trial({**(setup or {}), **params}, started_at, started)
