"""A Ray Tune training trial (from orchestrator.tune_entry): train one configuration (in the trial itself or on
a Ray Train TorchTrainer), evaluate it, log it to MLflow.

A one-worker CPU trial trains right in the Tune actor (no process group to pay for); more
workers or GPUs go through a TorchTrainer (DDP: gloo on CPU, NCCL on GPU). Both checkpoint
through Ray every `checkpoint_every` steps and at every evaluation step, and resume from it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.tune
import torch

from orchestrator.artifacts import send_missing
from orchestrator.cell_store import get_dir
from orchestrator.live_logging import LiveLogger
from orchestrator.model_state import ModelState
from orchestrator.plan import train_run_name
from orchestrator.ray_reporting import TrainReporter, TuneReporter
from orchestrator.records import complete_rows, failed_rows, trial_params, trial_summary
from orchestrator.run_page import log_loss_curve
from orchestrator.tags import TAG_NODE
from orchestrator.tracking import TrialRun
from orchestrator.trial_record import log_trial_record
from orchestrator.training_loop import LoopPlan, TrialParts, run_loop
from orchestrator.trial_setup import TrialSetup


def failure_reason(err: Exception) -> str:
    """One line saying why a trial failed (Ray Train wraps a worker's error: name the cause)."""
    root = getattr(err, "cause", None) or err
    return f"{type(root).__name__}: {root}".splitlines()[0]


def restore(state: ModelState, checkpoint: ray.train.Checkpoint | None, trial: TrialSetup) -> None:
    """Load the trial's own latest checkpoint (Tune's or Ray Train's, after a retry), else the checkpoint of an
    earlier pass it continues from (`WorkItem.resume_from`), else start at step 0."""
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state.restore(directory)
    elif trial.item.resume_from is not None:
        with tempfile.TemporaryDirectory() as local:
            state.restore(get_dir(trial.item.resume_from, Path(local)))


def run(trial: TrialSetup, started_at: float, started: float) -> None:
    """One training configuration: train, evaluate, log to MLflow. `started_at` (epoch seconds) and
    `started` (perf_counter) are when the trial began (in an actor's first trial, before this module's import).

    Each checkpoint already holds the rows evaluated so far (record.json), so what MLflow must receive at the
    end is never only in this process: if the trial dies, the driver finishes its record from there."""
    config, key = trial.config, trial.key
    torch.set_num_threads(max(1, int(config.train.cpus_per_worker)))
    settings, eval_steps = list(trial.settings), list(trial.eval_steps)
    run = TrialRun(trial.tracking_uri, trial.experiment_id, config.name, key, trial_params(config, key), trial.cell)
    node_id = ray.get_runtime_context().get_node_id()
    run.set_tags({TAG_NODE: node_id})
    summary = trial_summary(config, key, node_id, started_at)
    try:
        parts = TrialParts.build(config, key, fid_cache=trial.fid_cache)
        restore(parts.state, ray.tune.get_checkpoint(), trial)
    except Exception as err:  # e.g. an unreadable image in a data folder: record it like any failed trial
        error = failure_reason(err)
        summary.update(error=error, trial_seconds=time.perf_counter() - started)
        log_trial_record(run, summary, failed_rows(settings, eval_steps, error), {}, resumed_from=0)
        run.finish("FAILED", error)
        # Ray re-raises a trial's error in the driver, which must not unpickle types defined next to PyTorch.
        raise RuntimeError(error) from None
    state = parts.state
    resumed_from = state.step
    summary["resumed_from_step"] = resumed_from
    live = None if config.train.uses_torch_trainer else LiveLogger(run)  # a TorchTrainer's rank 0 has its own
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Path(tmp)
        try:
            if config.train.uses_torch_trainer:
                _fit_with_torch_trainer(state, trial)
            else:
                run_loop(parts, LoopPlan(trial), TuneReporter(), artifacts, live)
            status, error = "FINISHED", None
        except Exception as err:
            status, error = "FAILED", failure_reason(err)
        finally:
            if live is not None:
                live.close()
        summary.update(trial_seconds=time.perf_counter() - started, error=error)
        rows = complete_rows(state.rows, settings, eval_steps, error)
        log_trial_record(run, summary, rows, state.record(), resumed_from)
        if state.losses:
            log_loss_curve(run, state.losses, artifacts)
        send_missing(run, trial.snapshots)  # what the live logger could not send
        run.finish(status, error)
    if error:
        raise RuntimeError(error)
    ray.tune.report({"step": state.step, "done": 1.0, "loss": state.losses[-1][1] if state.losses else float("nan")})


def _train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: DDP over the workers; rank 0 evaluates, writes and logs live."""
    trial: TrialSetup = loop_config["trial"]
    config, key = trial.config, trial.key
    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(max(1, int(config.train.cpus_per_worker)))
    parts = TrialParts.build(config, key, device=str(ray.train.torch.get_device()), fid_cache=trial.fid_cache, rank=rank)
    restore(parts.state, ray.train.get_checkpoint(), trial)
    parts.state.generator.manual_seed(key.seed * 100_003 + rank * 7919 + parts.state.step)  # distinct data per rank
    plan = LoopPlan(trial, rank=rank, train_model=ray.train.torch.prepare_model(parts.state.model))
    if rank != 0:
        run_loop(parts, plan, TrainReporter(), None, None)
        return
    run = TrialRun(trial.tracking_uri, trial.experiment_id, config.name, key, {}, trial.cell, mark_running=False)
    live = LiveLogger(run)
    try:
        with tempfile.TemporaryDirectory() as samples:
            run_loop(parts, plan, TrainReporter(), Path(samples), live)
    finally:
        live.close()


def _fit_with_torch_trainer(state: ModelState, trial: TrialSetup) -> None:
    """Train on a TorchTrainer (its workers get the trial's setup, pickled, in train_loop_config), then load
    its last checkpoint into `state`."""
    # Ray Train's trainer classes are imported only by the trials that use them.
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    train = trial.config.train
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"trial": trial},
        scaling_config=ScalingConfig(
            num_workers=train.num_workers,
            use_gpu=train.use_gpu,
            resources_per_worker={"CPU": train.cpus_per_worker, **({"GPU": 1} if train.use_gpu else {})},
        ),
        run_config=RunConfig(
            # The same name on a rerun makes Ray Train resume from the latest checkpoint.
            name=train_run_name(trial.key.trial_id, trial.cell, trial.pass_name),
            storage_path=trial.train_storage,
            failure_config=FailureConfig(max_failures=train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    if result.checkpoint is not None:  # also after a failure: the rows evaluated before it are kept
        with result.checkpoint.as_directory() as directory:
            state.restore(directory)
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("Ray Train finished without a checkpoint")
