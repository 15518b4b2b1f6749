"""One training or evaluation of a sweep in this process, without Ray: `fmx train` and `fmx eval`.

The same units a Tune trial runs (orchestrator.model_state, trainer, evaluation), on this process's GPU where
the sweep sets train.use_gpu (training refuses to fall back to the CPU then; an evaluation of a GPU-trained
checkpoint may run on a machine without one), else on its CPU; loaded by orchestrator.api on first use, since it
imports PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fm_core.solvers import SolverSetting
from orchestrator.evaluation import Evaluator
from orchestrator.errors import NoGpuError
from orchestrator.model_state import ModelState, trial_device
from orchestrator.plan import TrainingKey
from orchestrator.rows import EvalRow
from orchestrator.schema import SweepConfig
from orchestrator.trainer import Trainer


def train_one(config: SweepConfig, key: TrainingKey, target: Path, on_log: Callable[[int, dict[str, Any]], None]) -> ModelState:
    """Train the sweep's training `key` to its last step and save its checkpoint folder at `target`."""
    if config.train.use_gpu and not torch.cuda.is_available():
        raise NoGpuError("train.use_gpu is true, but PyTorch sees no CUDA GPU here; set use_gpu: false to train on the CPU")
    torch.set_num_threads(max(1, int(config.train.cpus_per_worker)))
    state = ModelState(config.for_training(key), key, trial_device(config))
    trainer = Trainer(state)
    try:
        trainer.train_until(config.train.steps, on_log=on_log)
    finally:
        trainer.close()
    state.save(target)
    return state


def evaluate_checkpoint(config: SweepConfig, key: TrainingKey, checkpoint: Path, setting: SolverSetting) -> EvalRow:
    """The row of one evaluation of a saved checkpoint (CheckpointError: not one of this training's)."""
    state = ModelState(config.for_training(key), key, trial_device(config))
    state.restore(checkpoint)
    rows, _ = Evaluator(state).evaluate([setting])
    return rows[0]
