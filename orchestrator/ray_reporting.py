"""The two `Reporter`s of orchestrator.training_loop, the only part of the loop that needs Ray: a Tune trial's
and a Ray Train worker's report. Kept apart so that the loop, and everything `fmx train` and `fmx eval` load,
imports on a machine without Ray (tests/test_packaging.py)."""

from __future__ import annotations

from typing import Any

import ray.train
import ray.tune


class TuneReporter:
    """An in-trial training: straight to Ray Tune."""

    def progress(self, metrics: dict[str, Any]) -> None:
        ray.tune.report(metrics)

    def checkpoint(self, metrics: dict[str, Any], directory: str | None) -> None:
        ray.tune.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory) if directory else None)


class TrainReporter:
    """A TorchTrainer worker: Ray Train forwards rank 0's metrics to Tune (TuneReportCallback)."""

    def progress(self, metrics: dict[str, Any]) -> None:
        ray.train.report(metrics)

    def checkpoint(self, metrics: dict[str, Any], directory: str | None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory) if directory else None)
