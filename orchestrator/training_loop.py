"""The one training loop of a trial, whichever route runs it: in the Tune trial itself (one CPU worker) or in
every worker of a Ray Train TorchTrainer (DDP). The routes differ only in their `Reporter` (Tune's or Train's
report, orchestrator.ray_reporting: this module imports without Ray) and in what the loop is given (a
DDP-wrapped model, the per-worker batch, the worker's rank).

Rank 0 (the only rank of an in-trial training) evaluates at every evaluation step, writes the sample
artifacts, reports a progress result per evaluation, logs live to the trial's MLflow run (`LiveLogger`) and
saves the checkpoints; the other ranks train and match its reports one for one (Ray Train requires every
worker to report equally often).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn

from orchestrator.artifacts import forget, keep
from orchestrator.cell_store import put_dir, step_dir
from orchestrator.schema import SweepConfig
from orchestrator.evaluation import Evaluator
from orchestrator.live_logging import LiveLogger
from orchestrator.model_state import ModelState
from orchestrator.plan import TrainingKey
from orchestrator.plots import DATA_PANEL, data_panel, save_samples
from orchestrator.rows import EvalRow
from orchestrator.trainer import Trainer
from orchestrator.trial_setup import TrialSetup


class Reporter(Protocol):
    """How results leave the loop: a metrics-only progress result, and a checkpoint with its metrics."""

    def progress(self, metrics: dict[str, Any]) -> None: ...

    def checkpoint(self, metrics: dict[str, Any], directory: str | None) -> None: ...


@dataclass
class TrialParts:
    """One training configuration's model state, with the trainer and the evaluator that work on it."""

    state: ModelState
    trainer: Trainer
    evaluator: Evaluator

    @classmethod
    def build(
        cls, config: SweepConfig, key: TrainingKey, device: str = "cpu", fid_cache: Path | None = None, rank: int = 0
    ) -> TrialParts:
        """`config`: the sweep as this training sees it (`for_training(key)`, as a TrialSetup holds it);
        `fid_cache`: where its evaluations keep FID reference statistics (`TrialSetup.fid_cache`); `rank`: this
        worker's DDP rank (its batches are its own)."""
        state = ModelState(config, key, device)
        return cls(state, Trainer(state, rank), Evaluator(state, fid_cache))


@dataclass
class LoopPlan:
    """What to evaluate and where this worker stands: the same for every route."""

    setup: TrialSetup
    rank: int = 0
    train_model: nn.Module | None = None  # a DDP wrapper of the state's model; None: the model itself

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def boundaries(self) -> list[int]:
        """Every step at which the loop stops to checkpoint, and evaluate where asked."""
        every, steps = self.setup.config.train.checkpoint_every, self.setup.config.train.steps
        return sorted(set(range(every, steps + 1, every)) | set(self.setup.eval_steps) | {steps})


def eval_progress(index: int, total: int, row: EvalRow) -> dict[str, Any]:
    """A metrics-only result saying which evaluation just finished (the terminal shows it live)."""
    out: dict[str, Any] = {"step": row.train_step, "evaluated": index + 1, "evaluations": total, "setting": row.setting.label}
    values = {k: getattr(row, k) for k in ("nfe", "nll", "sample_metric", "sample_metric_name", "error")}
    out.update({k: v for k, v in values.items() if v is not None})
    return out


def run_loop(parts: TrialParts, plan: LoopPlan, reporter: Reporter, samples_dir: Path | None,
             live: LiveLogger | None) -> None:  # fmt: skip
    """Train through every checkpoint/evaluation boundary not reached yet (resuming mid-way is the same)."""
    state = parts.state
    on_log = live.log_point if plan.is_chief and live is not None else None
    if state.step == 0 and plan.is_chief:
        forget(plan.setup.snapshots)
    try:
        for boundary in plan.boundaries():
            if boundary > state.step:
                _train_to(boundary, parts, plan, reporter, samples_dir, live, on_log)
    finally:
        parts.trainer.close()


def _train_to(boundary: int, parts: TrialParts, plan: LoopPlan, reporter: Reporter, samples_dir: Path | None,
              live: LiveLogger | None, on_log: Callable[[int, dict[str, float]], None] | None) -> None:  # fmt: skip
    """Train to `boundary`, evaluate there where asked, and checkpoint."""
    state = parts.state
    parts.trainer.train_until(boundary, train_model=plan.train_model, on_log=on_log)  # each worker: train.worker_batch
    if boundary in plan.setup.eval_steps:
        _evaluate(parts, plan, reporter, samples_dir, live)
    metrics = {"step": state.step, "loss": state.losses[-1][1] if state.losses else float("nan")}
    if plan.is_chief:
        with tempfile.TemporaryDirectory() as tmp:
            state.save(tmp)
            reporter.checkpoint(metrics, tmp)
    else:
        reporter.checkpoint(metrics, None)


def _evaluate(parts: TrialParts, plan: LoopPlan, reporter: Reporter, samples_dir: Path | None,
              live: LiveLogger | None) -> None:  # fmt: skip
    settings, state, snapshots = list(plan.setup.settings), parts.state, plan.setup.snapshots
    total = len(settings)
    if not plan.is_chief:  # rank 0 evaluates alone; each of its progress reports is matched here
        for _ in range(total):
            reporter.progress({})
        return
    rows, samples = parts.evaluator.evaluate(settings, lambda i, row: reporter.progress(eval_progress(i, total, row)))
    state.rows += rows
    with tempfile.TemporaryDirectory() as tmp:  # later passes evaluate new settings of this step from these weights
        put_dir(state.save_weights(tmp), step_dir(snapshots, state.step))
    files = write_samples(parts.evaluator, rows, samples, samples_dir) if samples_dir is not None else {}
    keep(files, snapshots)  # kept until MLflow has them (orchestrator.artifacts)
    if live is not None:
        live.log_rows(rows)
        for artifact_path, paths in files.items():
            live.log_files(paths, artifact_path)


def write_samples(
    evaluator: Evaluator, rows: list[EvalRow], samples: dict[str, Any], folder: Path, suffix: str = ""
) -> dict[str, list[Path]]:
    """The step's sample figure (plots/) and raw samples and reference trajectory (samples/); `suffix` names
    the files of a later pass's evaluations apart from the training's own."""
    step = evaluator.state.step
    name, written = f"{step}{suffix}", {"plots": [], "samples": []}
    if samples:
        nfe = {r.setting.label: r.nfe for r in rows if r.nfe is not None}
        arrays = {k: v.numpy() for k, v in samples.items()}
        data = None if evaluator.data is None else data_panel(evaluator.data, next(iter(arrays.values())))
        written["plots"].append(save_samples(samples, folder / f"samples_step{name}.png", step=step,
                                             method=evaluator.state.key.trial_id, nfe=nfe, data=data))  # fmt: skip
        npz = folder / f"samples_step{name}.npz"
        np.savez_compressed(npz, **arrays, **({} if data is None else {DATA_PANEL: data}))
        written["samples"].append(npz)
    if evaluator.trajectory is not None:
        times, states = evaluator.trajectory
        npz = folder / f"trajectory_step{name}.npz"
        np.savez_compressed(npz, t=np.asarray(times), x=states.numpy())
        written["samples"].append(npz)
    return written
