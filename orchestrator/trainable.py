"""A Ray Tune trial's work (Tune is given orchestrator.trial_entry): train one configuration (in-process or on a
Ray Train TorchTrainer), then evaluate it.

A one-worker CPU trial trains right in the Tune actor (no process group to pay for); more
workers or GPUs go through a TorchTrainer (DDP: gloo on CPU, NCCL on GPU). Both checkpoint
through Ray every `checkpoint_every` steps and at every evaluation step, and resume from it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.tune
import torch

from orchestrator.config import SweepConfig
from fm_core.solvers import SolverSetting
from orchestrator.plan import TrainingKey
from orchestrator.plots import save_loss_curve, save_samples
from orchestrator.records import complete_rows, failed_rows, trial_params, trial_summary
from orchestrator.rows import EvalRow
from orchestrator.tracking import TAG_NODE, TrialRun, log_trial_record
from orchestrator.trial import TrialRunner


def _boundaries(config: SweepConfig, eval_steps: list[int]) -> list[int]:
    every = config.train.checkpoint_every
    return sorted(set(range(every, config.train.steps + 1, every)) | set(eval_steps) | {config.train.steps})


def _eval_progress(index: int, total: int, row: EvalRow) -> dict[str, Any]:
    """A metrics-only Tune result saying which evaluation just finished (the terminal shows it live)."""
    out: dict[str, Any] = {"step": row.train_step, "evaluated": index + 1, "evaluations": total, "setting": row.setting.label}
    values = {k: getattr(row, k) for k in ("nfe", "nll", "sample_metric", "sample_metric_name", "error")}
    out.update({k: v for k, v in values.items() if v is not None})
    return out


def _advance(
    runner: TrialRunner,
    config: SweepConfig,
    settings: list[SolverSetting],
    eval_steps: list[int],
    report: Any,
    train_model: torch.nn.Module | None = None,
    batch_size: int | None = None,
    is_chief: bool = True,
    samples_dir: Path | None = None,
    on_row: Callable[[int, EvalRow], None] | None = None,
) -> None:
    """Train through every checkpoint/evaluation boundary not yet reached, evaluating where asked."""
    for boundary in _boundaries(config, eval_steps):
        if boundary <= runner.step:
            continue
        runner.train_until(boundary, train_model=train_model, batch_size=batch_size)
        if is_chief and boundary in eval_steps:
            rows, samples = runner.evaluate(settings, on_row)
            runner.rows += rows
            if samples_dir is not None and samples:
                nfe = {r.setting.label: r.nfe for r in rows if r.nfe is not None}
                save_samples(samples, samples_dir / f"samples_step{boundary}.png", step=boundary,
                             method=runner.key.trial_id, nfe=nfe)  # fmt: skip
                np.savez_compressed(samples_dir / f"samples_step{boundary}.npz", **{k: v.numpy() for k, v in samples.items()})
            if samples_dir is not None and runner.trajectory is not None:
                times, states = runner.trajectory
                np.savez_compressed(samples_dir / f"trajectory_step{boundary}.npz", t=np.asarray(times), x=states.numpy())
        metrics = {"step": runner.step, "loss": runner.losses[-1][1] if runner.losses else float("nan")}
        if is_chief:
            with tempfile.TemporaryDirectory() as tmp:
                runner.save(tmp)
                report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            report(metrics)


def _train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: DDP over the workers, rank 0 checkpoints and evaluates."""
    config = SweepConfig.model_validate(loop_config["config"])
    key = TrainingKey(**loop_config["key"])
    settings = [SolverSetting(**s) for s in loop_config["settings"]]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(config.train.cpus_per_worker)))
    runner = TrialRunner(config, key, device=str(ray.train.torch.get_device()))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            runner.restore(directory)
    runner.generator.manual_seed(key.seed * 100_003 + rank * 7919 + runner.step)  # distinct data per rank
    ddp_model = ray.train.torch.prepare_model(runner.model)
    _advance(
        runner, config, settings, loop_config["eval_steps"], ray.train.report,
        train_model=ddp_model, batch_size=max(1, config.train.batch_size // world), is_chief=rank == 0,
    )


def _fit_with_torch_trainer(runner: TrialRunner, params: dict[str, Any], storage: str) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    config = runner.config
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={k: params[k] for k in ("config", "key", "settings", "eval_steps")},
        scaling_config=ScalingConfig(
            num_workers=config.train.num_workers,
            use_gpu=config.train.use_gpu,
            resources_per_worker={"CPU": config.train.cpus_per_worker, **({"GPU": 1} if config.train.use_gpu else {})},
        ),
        run_config=RunConfig(
            # The same name on a rerun makes Ray Train resume from the latest checkpoint.
            name=f"train-{runner.key.trial_id}",
            storage_path=storage,
            failure_config=FailureConfig(max_failures=config.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    if result.checkpoint is not None:  # also after a failure: the rows evaluated before it are kept
        with result.checkpoint.as_directory() as directory:
            runner.restore(directory)
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("Ray Train finished without a checkpoint")


def _reason(err: Exception) -> str:
    """One line saying why a trial failed (Ray Train wraps a worker's error: name the cause)."""
    root = getattr(err, "cause", None) or err
    return f"{type(root).__name__}: {root}".splitlines()[0]


def run_training_trial(params: dict[str, Any], started_at: float, started: float) -> None:
    """One training configuration: train, evaluate, log to MLflow. `started_at` (epoch seconds) and
    `started` (perf_counter) are when the trial began (in an actor's first trial, before this module's import).

    Each checkpoint already holds the rows evaluated so far (record.json), so what MLflow must receive at the
    end is never only in this process: if the trial dies, the driver finishes its record from there."""
    config = SweepConfig.model_validate(params["config"])
    key = TrainingKey(**params["key"])
    settings = [SolverSetting(**s) for s in params["settings"]]
    eval_steps: list[int] = params["eval_steps"]
    torch.set_num_threads(max(1, int(config.train.cpus_per_worker)))
    run = TrialRun(params["tracking_uri"], params["experiment_id"], config.name, key, trial_params(config, key))
    node_id = ray.get_runtime_context().get_node_id()
    run.set_tags({TAG_NODE: node_id})
    summary = trial_summary(config, key, node_id, started_at)
    try:
        runner = TrialRunner(config, key)
        checkpoint = ray.tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                runner.restore(directory)
    except Exception as err:  # e.g. an unreadable image in a data folder: record it like any failed trial
        error = _reason(err)
        summary.update(error=error, trial_seconds=time.perf_counter() - started)
        log_trial_record(run, summary, failed_rows(settings, eval_steps, error), {}, resumed_from=0)
        run.finish("FAILED", error)
        # Ray re-raises a trial's error in the driver, which must not unpickle types defined next to PyTorch.
        raise RuntimeError(error) from None
    resumed_from = runner.step
    summary["resumed_from_step"] = resumed_from
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Path(tmp)
        try:
            if config.train.uses_torch_trainer:
                _fit_with_torch_trainer(runner, params, params["storage_path"])
            else:
                _advance(
                    runner, config, settings, eval_steps, ray.tune.report, samples_dir=artifacts,
                    on_row=lambda i, row: ray.tune.report(_eval_progress(i, len(settings), row)),
                )  # fmt: skip
            status, error = "FINISHED", None
        except Exception as err:
            status, error = "FAILED", _reason(err)
        if runner.losses:
            save_loss_curve(runner.losses, artifacts / "loss_curve.png", title=key.trial_id)
        summary.update(trial_seconds=time.perf_counter() - started, error=error)
        rows = complete_rows(runner.rows, settings, eval_steps, error)
        log_trial_record(run, summary, rows, runner.record(), resumed_from)
        for file in sorted(artifacts.glob("*.png")):
            run.log_artifact(file, "plots")
        for file in sorted(artifacts.glob("*.npz")):
            run.log_artifact(file, "samples")
        run.finish(status, error)
    if error:
        raise RuntimeError(error)
    ray.tune.report({"step": runner.step, "done": 1.0, "loss": runner.losses[-1][1] if runner.losses else float("nan")})
