"""The run stage of a sweep: Ray up, and one Ray Tune experiment (a pass) over the pass's work items.

Each work item is one Tune trial (train a cell, or evaluate a trained cell from its stored weights); the
trial gets its typed setup through Ray's object store (`tune.with_parameters`), so Tune's stored params
hold only the training key. Ray is imported inside the functions that start it: its import alone costs
seconds, and Ray reads some settings from the environment as it is imported.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from orchestrator.schema import SweepConfig
from orchestrator.planning import WAITING_TRIAL_CPUS, PlannedSweep
from orchestrator.plan import TrainingKey
from orchestrator.preflight import is_local_ray
from orchestrator.reconcile import TrialState
from orchestrator.pass_work import EVALUATE, WorkItem
from orchestrator.trial_setup import build_pass_setup
from orchestrator.tune_entry import training_trial
from orchestrator.tune_callbacks import SweepProgress, TrialLedger, tune_trial_states


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    import ray

    # Ray Train's controller polls its workers every 2 s by default, which blocks each report.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "5")
    # fmx checkpoints often on purpose (resume loses little); Tune's warning about it is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    if is_local_ray(address):
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        # On an existing cluster the driver's environment does not reach Ray Train's controller: ship it.
        env = {k: os.environ[k] for k in ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",)}
        ray.init(address=address, log_to_driver=False, configure_logging=False, runtime_env={"env_vars": env})


def callers_ray() -> bool:
    """Whether this process is connected to a Ray already (the caller's own: a notebook's `ray.init()`, a test's
    module-wide Ray): a sweep then runs on it and leaves it running. Read without importing Ray, whose import
    alone costs seconds, where nothing has imported it yet (then nothing started it either)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def stop_local_ray() -> None:
    """Stop Ray at the end of the command, ~1 s sooner than the exit hook: Ray gives each of its processes a
    second to exit on SIGTERM, and its autoscaler monitor's SIGTERM handler reports to the GCS, which Ray has
    stopped by then, so it outlasts that second; it is killed first. On a cluster (no processes of ours) this
    only disconnects."""
    import ray

    try:  # a speed-up only, through Ray's internals: never let it hide the sweep's own outcome
        import ray._private.worker

        node = getattr(ray._private.worker, "_global_node", None)
        for info in getattr(node, "all_processes", {}).get("monitor", []):
            info.process.kill()
    except Exception:  # noqa: BLE001
        pass
    ray.shutdown()


def quiet_tune_advice() -> None:
    """fmx says how to resume (`fmx sweep FILE --resume`); Tune's own hint names its Python API instead, and
    its metrics loader warns about trials that never reported, which fmx records itself (so does its list of
    trials that did not complete)."""
    class _DropRestoreHint(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:  # fmx's summary counts the trials that did not finish
            return not any(text in record.getMessage() for text in ("Tuner.restore", "Trials did not complete"))

    logging.getLogger("ray.tune.tune").addFilter(_DropRestoreHint())
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


class Unschedulable(RuntimeError):
    """No node can ever run one of the sweep's workers: Tune would wait forever."""


def _trial_resources(config: SweepConfig, work: list[WorkItem] | None = None) -> Any:
    """What a trial holds: a training's (one worker's share in-trial, almost nothing beside a TorchTrainer),
    and, where a TorchTrainer sweep has evaluation-only trials, one worker's CPUs and GPU for those, which
    evaluate in the trial itself."""
    train = config.train
    if not train.uses_torch_trainer:
        return {"CPU": train.cpus_per_worker}
    base = {"CPU": WAITING_TRIAL_CPUS}
    evaluators = frozenset(w.key.trial_id for w in work or [] if w.mode == EVALUATE)
    if not evaluators:
        return base
    worker = {"CPU": train.cpus_per_worker, **({"GPU": 1.0} if train.use_gpu else {})}
    return functools.partial(_resources_of, base, worker, evaluators)


def _resources_of(base: dict[str, float], worker: dict[str, float], evaluators: frozenset[str], trial_config: dict) -> Any:
    from ray.tune import PlacementGroupFactory

    return PlacementGroupFactory([worker if TrainingKey(**trial_config["key"]).trial_id in evaluators else base])


def schedulable_problem(config: SweepConfig, nodes: list[dict[str, float]]) -> str | None:
    """Why one trial cannot run on these (alive) nodes' resources: no node fits one worker (its CPUs, and a
    GPU with use_gpu), or all of them together cannot hold one trial's workers (a TorchTrainer places every
    worker at once and waits forever for the rest). None when a trial fits."""
    train = config.train
    gpus = 1 if train.use_gpu else 0
    if not any(r.get("CPU", 0) >= train.cpus_per_worker and r.get("GPU", 0) >= gpus for r in nodes):
        want = f"{train.cpus_per_worker:g} CPU(s)" + (" and a GPU" if gpus else "")
        return f"train: each worker needs {want}, but no node of the Ray cluster has that"
    workers = train.num_workers if train.uses_torch_trainer else 1
    # Workers per node, as the placement sees it: each node holds as many whole workers as its CPUs (and GPUs) allow.
    fits = sum(min(int(r.get("CPU", 0) // train.cpus_per_worker), int(r.get("GPU", 0)) if gpus else 10**9) for r in nodes)
    if fits < workers:
        return (f"train.num_workers: one trial needs {workers} workers of {train.cpus_per_worker:g} CPU(s)"
                + (" and a GPU" if gpus else "") + f", but the Ray cluster's nodes hold {fits} such worker(s) in all")  # fmt: skip
    return None


def check_schedulable(config: SweepConfig, address: str | None, console: Console) -> None:
    """After Ray is up, `schedulable_problem` on its nodes. On the local Ray that is final (Unschedulable); a
    cluster's autoscaler may still add nodes, so there it is a warning."""
    import ray

    problem = schedulable_problem(config, [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")])
    if problem is None:
        return
    if is_local_ray(address):
        here = ", ".join(f"{k} {v:g}" for k, v in sorted(ray.cluster_resources().items()) if k in ("CPU", "GPU"))
        raise Unschedulable(f"{problem} (this machine: {here})")
    console.print(f"[yellow]warning:[/] {problem} yet; Tune waits until the autoscaler adds nodes", highlight=False)


def _concurrency(config: SweepConfig, address: str | None) -> int | None:
    """The file's max_concurrent_trials, else, for TorchTrainer trials on the local Ray, as many as its CPUs
    (or GPUs) can train at once: a trial holds almost nothing itself, so without a cap every trial would
    start a Train controller that only waits for workers, and the waiting controllers crowd the CPUs.
    On a cluster the autoscaler needs the pending trainers to see demand, so no cap is set there."""
    if config.max_concurrent_trials is not None or not config.train.uses_torch_trainer or not is_local_ray(address):
        return config.max_concurrent_trials
    import ray

    resources = ray.cluster_resources()
    train = config.train
    if train.use_gpu:
        return max(1, int(resources.get("GPU", 0) // train.num_workers))
    return max(1, int(resources.get("CPU", 1) // (train.num_workers * train.cpus_per_worker)))


@dataclass
class PassRun:
    """What Tune knows of each trial of a pass once `fit()` has returned."""

    name: str
    work: list[WorkItem]
    states: dict[str, TrialState]


def run_pass(sweep: PlannedSweep, work: list[WorkItem], name: str, experiment_id: str, console: Console) -> PassRun:
    """One new Tune experiment over the pass's work items. Never `Tuner.restore`: that unpickles the Tune
    state on the sweep's storage (orchestrator.resume_points says how a pass continues instead)."""
    from ray import tune  # lazy: see the module's docstring

    config = sweep.config
    setup = build_pass_setup(config, sweep.plan, work, tracking_uri=sweep.tracking_uri, experiment_id=experiment_id,
                             storage_root=sweep.folders.storage, train_storage=sweep.folders.train, pass_name=name)  # fmt: skip
    trainable = tune.with_resources(tune.with_parameters(training_trial, setup=setup), _trial_resources(config, work))
    tune_path = sweep.folders.tune(name)
    tuner = tune.Tuner(
        trainable,
        param_space=_param_space(work),
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=_concurrency(config, sweep.address)),
        run_config=tune.RunConfig(
            name=name,
            storage_path=sweep.folders.storage,
            failure_config=tune.FailureConfig(max_failures=config.train.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[SweepProgress(len(work), config.train.steps, console), TrialLedger(tune_path), *_result_loggers()],
            verbose=0,
        ),
    )
    try:
        tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C while Tune was stopping: the checkpoints are still there
        pass
    return PassRun(name, work, tune_trial_states(tune_path))


def _result_loggers() -> list[Any]:
    """Tune's JSON and CSV result files, without its TensorBoard logger: fmx's curves are in MLflow, and that
    logger's import (tensorboardX) pulls PyTorch into the driver, seconds of CPU per sweep for files nobody
    reads. Tune adds every logger missing from the list unless told not to."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    return [JsonLoggerCallback(), CSVLoggerCallback()]


def _param_space(work: list[WorkItem]) -> dict[str, object]:
    """What Tune stores per trial (params.json): only the training key; all else is in its TrialSetup."""
    from ray import tune

    return {"key": tune.grid_search([w.key.as_dict() for w in work])}
