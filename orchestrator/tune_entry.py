"""The function Ray Tune runs for each trial, importable without PyTorch, MLflow or matplotlib.

The driver only needs a reference to it. When the driver imported the trial's code itself, PyTorch's
import competed with Ray's start for the two cores on the path to the first trial; the trial actors
import it anyway, once each, in their first trial (counted in that trial's `trial_seconds`).
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from orchestrator.trial_setup import PassSetup

# The trial's routes import PyTorch: named here, imported by the trial (importlib), never by the driver.
TRAINING_ROUTE = "orchestrator.tune_training"
EVALUATION_ROUTE = "orchestrator.tune_evaluation"


def training_trial(params: dict[str, Any], setup: PassSetup | None = None) -> None:
    """Tune function trainable for one trial of a pass. Its name names Tune's trial folders, and `--resume`
    finds the trainable by it: keep it. `params` is the trial's point of the grid (its training key),
    `setup` every trial's resolved setup, handed over by `tune.with_parameters` so that it never lands in
    Tune's params.json / params.pkl on storage (a path expanded from `${VAR}`, a tracking URI with credentials)."""
    started_at, started = time.time(), time.perf_counter()
    if setup is None:
        raise ValueError("training_trial needs the pass's setup (tune.with_parameters(training_trial, setup=...))")
    trial = setup.of(params)
    route = importlib.import_module(EVALUATION_ROUTE if trial.evaluates_only else TRAINING_ROUTE)
    route.run(trial, started_at, started)
