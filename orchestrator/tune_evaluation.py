"""A Ray Tune evaluation trial (from orchestrator.tune_entry): a trained cell's missing evaluations (new solver
settings, new evaluation settings), from the weights its training stored at each evaluation step: no retraining.
The new rows join the cell's run (one child run each, evaluations.json rewritten with old and new rows, a row
of the same evaluation replaced)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import ray.tune
import torch

from orchestrator.artifacts import keep, send_missing
from orchestrator.cell_store import get_dir, step_dir
from orchestrator.evaluation import Evaluator
from orchestrator.model_state import ModelState, trial_device
from orchestrator.records import trial_identity
from orchestrator.rows import EvalRow
from orchestrator.tracking import TrialRun
from orchestrator.trial_record import log_added_evaluations
from orchestrator.training_loop import eval_progress, write_samples
from orchestrator.trial_setup import TrialSetup
from orchestrator.tune_training import failure_reason


def run(trial: TrialSetup, started_at: float, started: float) -> None:
    """Evaluate what `trial.item.evaluate` lists ((step, setting labels) pairs) and log the rows to the cell's
    run; `started_at` / `started` as for a training trial (unused: the run keeps its training's summary)."""
    config, item = trial.config, trial.item
    torch.set_num_threads(max(1, int(config.train.cpus_per_worker)))
    run = TrialRun(trial.tracking_uri, trial.experiment_id, config.name, item.key, {}, item.cell, mark_running=False)
    content = run.read_evaluations()
    settings = {s.label: s for s in trial.settings}
    state = ModelState(config, item.key, device=trial_device(config))  # a use_gpu trial holds a GPU
    evaluator = Evaluator(state, trial.fid_cache)
    rows: list[EvalRow] = []
    error = None
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Path(tmp)
        try:
            for step, labels in item.evaluate:
                with tempfile.TemporaryDirectory() as local:
                    state.restore_weights(get_dir(step_dir(trial.snapshots, step), Path(local)))
                todo = [settings[label] for label in labels]
                found, samples = evaluator.evaluate(todo, lambda i, row, n=len(todo): ray.tune.report(eval_progress(i, n, row)))
                rows += found
                keep(write_samples(evaluator, found, samples, artifacts, suffix=f"_{trial.pass_name}"), trial.snapshots)
        except Exception as err:  # a lost or unreadable snapshot: the evaluations not reached are recorded failed
            error = failure_reason(err)
        done = {(r.train_step, r.setting.label) for r in rows}
        rows += [EvalRow.of(settings[label], step, **trial_identity(config, item.key), status="failed", error=error)
                 for step, labels in item.evaluate for label in labels if (step, label) not in done and error]  # fmt: skip
        rows = log_added_evaluations(run, content, rows)
        send_missing(run, trial.snapshots)
    if error:
        raise RuntimeError(error)
    ray.tune.report({"done": 1.0, "evaluated": len(rows)})
