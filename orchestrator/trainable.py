"""A Ray Tune trial's work (Tune is given orchestrator.trial_entry): train one configuration (in-process or on a
Ray Train TorchTrainer), then evaluate it.

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

from orchestrator.schema import SweepConfig
from fm_core.solvers import SolverSetting
from orchestrator.plan import TrainingKey
from orchestrator.live_logging import LiveLogger
from orchestrator.plots import save_loss_curve
from orchestrator.artifacts import keep, send_missing
from orchestrator.cell_store import cell_dir, get_dir, step_dir
from orchestrator.evaluation_runs import log_evaluation_runs
from orchestrator.plan import train_run_name
from orchestrator.records import complete_rows, failed_rows, trial_identity, trial_params, trial_summary
from orchestrator.pass_work import EVALUATE, WorkItem
from orchestrator.rows import FIELD_NAMES, EvalRow, rows_from_dicts
from orchestrator.tracking import TrialRun
from orchestrator.tags import TAG_NODE
from orchestrator.trial_record import log_trial_record
from orchestrator.trial import TrialRunner
from orchestrator.training_loop import LoopPlan, TrainReporter, TuneReporter, eval_progress, run_loop, write_samples


def _train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: DDP over the workers; rank 0 evaluates, writes and logs live."""
    config = SweepConfig.model_validate(loop_config["config"])
    key = TrainingKey(**loop_config["key"])
    settings = [SolverSetting(**s) for s in loop_config["settings"]]
    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(max(1, int(config.train.cpus_per_worker)))
    runner = TrialRunner(config, key, device=str(ray.train.torch.get_device()))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            runner.restore(directory)
    runner.generator.manual_seed(key.seed * 100_003 + rank * 7919 + runner.step)  # distinct data per rank
    plan = LoopPlan(config, settings, loop_config["eval_steps"], rank=rank, train_model=ray.train.torch.prepare_model(runner.model),
                    snapshots=loop_config["snapshots"])  # fmt: skip
    if rank != 0:
        run_loop(runner, plan, TrainReporter(), None, None)
        return
    run = TrialRun(loop_config["tracking_uri"], loop_config["experiment_id"], config.name, key, {}, loop_config["cell"], mark_running=False)
    live = LiveLogger(run)
    try:
        with tempfile.TemporaryDirectory() as samples:
            run_loop(runner, plan, TrainReporter(), Path(samples), live)
    finally:
        live.close()


def _fit_with_torch_trainer(runner: TrialRunner, params: dict[str, Any], item: WorkItem) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    config = runner.config
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            **{k: params[k] for k in ("config", "key", "settings", "eval_steps", "tracking_uri", "experiment_id")},
            "cell": item.cell, "snapshots": cell_dir(params["storage_root"], item.cell),
        },  # fmt: skip
        scaling_config=ScalingConfig(
            num_workers=config.train.num_workers,
            use_gpu=config.train.use_gpu,
            resources_per_worker={"CPU": config.train.cpus_per_worker, **({"GPU": 1} if config.train.use_gpu else {})},
        ),
        run_config=RunConfig(
            # The same name on a rerun makes Ray Train resume from the latest checkpoint.
            name=train_run_name(runner.key.trial_id, item.cell, params["pass"]),
            storage_path=params["storage_path"],
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
    item = WorkItem.from_dict(params["work"][key.trial_id])
    torch.set_num_threads(max(1, int(config.train.cpus_per_worker)))
    if item.mode == EVALUATE:
        run_evaluation_trial(config, item, params)
        return
    settings = [SolverSetting(**s) for s in params["settings"]]
    eval_steps: list[int] = params["eval_steps"]
    run = TrialRun(params["tracking_uri"], params["experiment_id"], config.name, key, trial_params(config, key), item.cell)
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
    live = None if config.train.uses_torch_trainer else LiveLogger(run)  # a TorchTrainer's rank 0 has its own
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Path(tmp)
        try:
            if config.train.uses_torch_trainer:
                _fit_with_torch_trainer(runner, params, item)
            else:
                plan = LoopPlan(config, settings, eval_steps, snapshots=cell_dir(params["storage_root"], item.cell))
                run_loop(runner, plan, TuneReporter(), artifacts, live)
            status, error = "FINISHED", None
        except Exception as err:
            status, error = "FAILED", _reason(err)
        finally:
            if live is not None:
                live.close()
        if runner.losses:
            save_loss_curve(runner.losses, artifacts / "loss_curve.png", title=key.trial_id)
        summary.update(trial_seconds=time.perf_counter() - started, error=error)
        rows = complete_rows(runner.rows, settings, eval_steps, error)
        log_trial_record(run, summary, rows, runner.record(), resumed_from)
        if (artifacts / "loss_curve.png").exists():
            run.log_artifact(artifacts / "loss_curve.png", "plots")
        send_missing(run, cell_dir(params["storage_root"], item.cell))  # what the live logger could not send
        run.finish(status, error)
    if error:
        raise RuntimeError(error)
    ray.tune.report({"step": runner.step, "done": 1.0, "loss": runner.losses[-1][1] if runner.losses else float("nan")})


def run_evaluation_trial(config: SweepConfig, item: WorkItem, params: dict[str, Any]) -> None:
    """A trained cell's missing evaluations (new solver settings, new evaluation settings), from the weights its
    training stored at each evaluation step: no retraining. The new rows join the cell's run (one child run
    each, evaluations.json rewritten with old and new rows, a row of the same evaluation replaced)."""
    run = TrialRun(params["tracking_uri"], params["experiment_id"], config.name, item.key, {}, item.cell, mark_running=False)
    content = run.read_evaluations() or {"summary": {}, "rows": []}
    settings = {s.label: s for s in (SolverSetting(**d) for d in params["settings"])}
    device = "cuda" if config.train.use_gpu and torch.cuda.is_available() else "cpu"  # the trial holds a GPU then
    runner = TrialRunner(config, item.key, device=device)
    folder = cell_dir(params["storage_root"], item.cell)
    rows: list[EvalRow] = []
    error = None
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Path(tmp)
        try:
            for step, labels in item.evaluate:
                with tempfile.TemporaryDirectory() as local:
                    runner.restore_weights(get_dir(step_dir(folder, step), Path(local)))
                todo = [settings[label] for label in labels]
                found, samples = runner.evaluate(todo, lambda i, row, n=len(todo): ray.tune.report(eval_progress(i, n, row)))
                rows += found
                keep(write_samples(runner, found, samples, artifacts, suffix=f"_{params['pass']}"), folder)
        except Exception as err:  # a lost or unreadable snapshot: the evaluations not reached are recorded failed
            error = _reason(err)
        done = {(r.train_step, r.setting.label) for r in rows}
        rows += [EvalRow.of(settings[label], step, **trial_identity(config, item.key), status="failed", error=error)
                 for step, labels in item.evaluate for label in labels if (step, label) not in done and error]  # fmt: skip
        summary = content.get("summary", {})
        shared = {k: v for k, v in summary.items() if k in FIELD_NAMES and k not in ("error", "eval_digest")}
        rows = [row.replace(**shared) for row in rows]
        log_evaluation_runs(run, rows)
        merged = {r.evaluation_key: r for r in rows_from_dicts(content.get("rows", []))}
        merged.update({r.evaluation_key: r for r in rows})
        run.log_evaluations(list(merged.values()), summary)
        send_missing(run, folder)
    if error:
        raise RuntimeError(error)
    ray.tune.report({"done": 1.0, "evaluated": len(rows)})
