"""One training or evaluation of a sweep in this process, without Ray: `fmx train` and `fmx eval`.

The same units a Tune trial runs (orchestrator.model_state, trainer, evaluation), on the CPU or GPU of this
process; loaded by orchestrator.api on first use, since it imports PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fm_core.solvers import SolverSetting
from orchestrator.evaluation import Evaluator
from orchestrator.model_state import ModelState
from orchestrator.plan import TrainingKey
from orchestrator.rows import EvalRow
from orchestrator.schema import SweepConfig
from orchestrator.trainer import Trainer


def train_one(config: SweepConfig, key: TrainingKey, target: Path, on_log: Callable[[int, dict[str, Any]], None]) -> ModelState:
    """Train the sweep's training `key` to its last step and save its checkpoint folder at `target`."""
    torch.set_num_threads(max(1, int(config.train.cpus_per_worker)))
    state = ModelState(config.for_training(key), key)
    Trainer(state).train_until(config.train.steps, on_log=on_log)
    state.save(target)
    return state


def evaluate_checkpoint(config: SweepConfig, key: TrainingKey, checkpoint: Path, setting: SolverSetting) -> EvalRow:
    """The row of one evaluation of a saved checkpoint (CheckpointError: not one of this training's)."""
    state = ModelState(config.for_training(key), key)
    state.restore(checkpoint)
    rows, _ = Evaluator(state).evaluate([setting])
    return rows[0]
