"""The one training loop of a trial, whichever route runs it: in the Tune trial itself (one CPU worker) or in
every worker of a Ray Train TorchTrainer (DDP). The routes differ only in their `Reporter` (Tune's or Train's
report) and in what the loop is given (a DDP-wrapped model, the per-worker batch, the worker's rank).

Rank 0 (the only rank of an in-trial training) evaluates at every evaluation step, writes the sample
artifacts, reports a progress result per evaluation, logs live to the trial's MLflow run (`LiveLogger`) and
saves the checkpoints; the other ranks train and match its reports one for one (Ray Train requires every
worker to report equally often).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import ray.train
import ray.tune
from torch import nn

from fm_core.solvers import SolverSetting
from orchestrator.artifacts import forget, keep
from orchestrator.cell_store import put_dir, step_dir
from orchestrator.schema import SweepConfig
from orchestrator.live_logging import LiveLogger
from orchestrator.plots import save_samples
from orchestrator.rows import EvalRow
from orchestrator.trial import TrialRunner


class Reporter(Protocol):
    """How results leave the loop: a metrics-only progress result, and a checkpoint with its metrics."""

    def progress(self, metrics: dict[str, Any]) -> None: ...

    def checkpoint(self, metrics: dict[str, Any], directory: str | None) -> None: ...


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


@dataclass
class LoopPlan:
    """What to evaluate and where this worker stands: the same for every route."""

    config: SweepConfig
    settings: list[SolverSetting]
    eval_steps: list[int]
    rank: int = 0
    train_model: nn.Module | None = None  # a DDP wrapper of runner.model; None: the model itself
    snapshots: str | None = None  # the cell's folder for the weights of each evaluation step (cell_store)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def boundaries(self) -> list[int]:
        """Every step at which the loop stops to checkpoint, and evaluate where asked."""
        every, steps = self.config.train.checkpoint_every, self.config.train.steps
        return sorted(set(range(every, steps + 1, every)) | set(self.eval_steps) | {steps})


def eval_progress(index: int, total: int, row: EvalRow) -> dict[str, Any]:
    """A metrics-only result saying which evaluation just finished (the terminal shows it live)."""
    out: dict[str, Any] = {"step": row.train_step, "evaluated": index + 1, "evaluations": total, "setting": row.setting.label}
    values = {k: getattr(row, k) for k in ("nfe", "nll", "sample_metric", "sample_metric_name", "error")}
    out.update({k: v for k, v in values.items() if v is not None})
    return out


def run_loop(runner: TrialRunner, plan: LoopPlan, reporter: Reporter, samples_dir: Path | None,
             live: LiveLogger | None) -> None:  # fmt: skip
    """Train through every checkpoint/evaluation boundary not reached yet (resuming mid-way is the same)."""
    on_log = live.log_point if plan.is_chief and live is not None else None
    if runner.step == 0 and plan.is_chief and plan.snapshots is not None:
        forget(plan.snapshots)
    for boundary in plan.boundaries():
        if boundary <= runner.step:
            continue
        runner.train_until(boundary, train_model=plan.train_model, on_log=on_log)  # each worker: train.worker_batch
        if boundary in plan.eval_steps:
            _evaluate(runner, plan, reporter, samples_dir, live)
        metrics = {"step": runner.step, "loss": runner.losses[-1][1] if runner.losses else float("nan")}
        if plan.is_chief:
            with tempfile.TemporaryDirectory() as tmp:
                runner.save(tmp)
                reporter.checkpoint(metrics, tmp)
        else:
            reporter.checkpoint(metrics, None)


def _evaluate(runner: TrialRunner, plan: LoopPlan, reporter: Reporter, samples_dir: Path | None,
              live: LiveLogger | None) -> None:  # fmt: skip
    total = len(plan.settings)
    if not plan.is_chief:  # rank 0 evaluates alone; each of its progress reports is matched here
        for _ in range(total):
            reporter.progress({})
        return
    rows, samples = runner.evaluate(plan.settings, lambda i, row: reporter.progress(eval_progress(i, total, row)))
    runner.rows += rows
    if plan.snapshots is not None:  # later passes evaluate new settings of this step from these weights
        with tempfile.TemporaryDirectory() as tmp:
            put_dir(runner.save_weights(tmp), step_dir(plan.snapshots, runner.step))
    files = write_samples(runner, rows, samples, samples_dir) if samples_dir is not None else {}
    if plan.snapshots is not None:  # kept until MLflow has them (orchestrator.artifacts)
        keep(files, plan.snapshots)
    if live is not None:
        live.log_rows(rows)
        for artifact_path, paths in files.items():
            live.log_files(paths, artifact_path)


def write_samples(
    runner: TrialRunner, rows: list[EvalRow], samples: dict[str, Any], folder: Path, suffix: str = ""
) -> dict[str, list[Path]]:
    """The step's sample figure (plots/) and raw samples and reference trajectory (samples/); `suffix` names
    the files of a later pass's evaluations apart from the training's own."""
    name, written = f"{runner.step}{suffix}", {"plots": [], "samples": []}
    if samples:
        nfe = {r.setting.label: r.nfe for r in rows if r.nfe is not None}
        written["plots"].append(save_samples(samples, folder / f"samples_step{name}.png", step=runner.step,
                                             method=runner.key.trial_id, nfe=nfe))  # fmt: skip
        npz = folder / f"samples_step{name}.npz"
        np.savez_compressed(npz, **{k: v.numpy() for k, v in samples.items()})
        written["samples"].append(npz)
    if runner.trajectory is not None:
        times, states = runner.trajectory
        npz = folder / f"trajectory_step{name}.npz"
        np.savez_compressed(npz, t=np.asarray(times), x=states.numpy())
        written["samples"].append(npz)
    return written
