"""The driver of `fmx sweep`: Ray up, one Tune trial per training configuration, tables at the end."""

from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from orchestrator.config import SweepConfig
from orchestrator.plan import SweepPlan, TrainingKey, plan_sweep
from orchestrator.preflight import is_local_ray
from orchestrator.cells import training_cell
from orchestrator.cell_store import DamagedFile
from orchestrator.passes import FIRST_PASS, PassEntry, next_pass_name, read_passes, write_passes
from orchestrator.reconcile import Reconciled, TrialLedger, TrialState, reconcile, tune_trial_states
from orchestrator.registry import EVALUATE, TRAIN, PassPlan, WorkItem, drop_runs, mark_current, plan_pass, read_cells
from orchestrator.sweep_guard import config_digest, write_sweep_state
from orchestrator.tune_state import CorruptTuneState, StateBackup, repair_tune_state
from orchestrator.rows import EvalRow
from orchestrator.tables import FewerRowsError, evaluation_rows, rows_frame, write_tables
from orchestrator.tracking import TAG_CELL, ensure_experiment, existing_experiment, find_experiment, read_evaluations
from orchestrator.trial_setup import PassSetup, build_pass_setup
from orchestrator.tune_entry import training_trial

#: Where a TorchTrainer trial's Ray Train run keeps its checkpoints (`<storage>/train/train-<trial id>/`).
TRAIN_DIR = "train"


class ResumeError(RuntimeError):
    """--resume without earlier state, or earlier state without --resume."""


@dataclass
class SweepOutcome:
    runs: pd.DataFrame
    runs_path: Path | None  # None where the tables were not written (see `not_written`)
    table_path: Path | None
    trainings: int
    failed_trials: int
    seconds: float
    unrecorded: dict[str, str]  # trial id -> why, for failed trials that never created their MLflow run
    interrupted: list[str]  # trials that had not finished when the driver was interrupted
    repaired: dict[str, str | None]  # trials whose record the driver wrote (trial -> reason)
    not_written: str | None = None  # why runs.parquet was left as it was
    pass_plan: PassPlan | None = None  # what the last pass ran and reused (None: an interrupted restore)


def results_dir(config: SweepConfig, root: Path | None = None) -> Path:
    return (root or Path.cwd()) / "results" / config.name


def storage_dir(config: SweepConfig, root: Path | None = None) -> str:
    """Tune state and checkpoints: the file's `storage_path` (shared on a cluster: a mounted folder or a
    cloud URI such as s3://bucket/fmx) or results/<name>/ray. A string, since URIs are not local paths."""
    if config.storage_path and "://" in config.storage_path:
        return f"{config.storage_path.rstrip('/')}/{config.name}"
    if config.storage_path:
        return str(Path(config.storage_path).expanduser().resolve() / config.name)
    return str(results_dir(config, root).resolve() / "ray")


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def check_resume_state(config: SweepConfig, resume: bool) -> PassEntry | None:
    """The pass `--resume` restores (None: nothing to restore); refuses to start anything new over a pass that
    was interrupted (its trials would be trained twice), and `--resume` with nothing to resume. After a pass
    that ended, a run without --resume (or with it, of an edited file) plans a new pass for what is missing."""
    from ray.tune import Tuner

    try:
        storage = storage_dir(config)
        if "://" not in storage and Path(storage).exists() and not Path(storage).is_dir():
            raise ResumeError(f"storage_path: {storage} is not a folder")
        passes = read_passes(storage, legacy_state=Tuner.can_restore(_join(storage, FIRST_PASS)))
        last = passes[-1] if passes else None
        tune_path = _join(storage, last.name if last else FIRST_PASS)
        exists = last is not None and Tuner.can_restore(tune_path)
    except DamagedFile as err:
        raise ResumeError(f"{err}: restore it from a copy, or delete {results_dir(config)} to start over") from None
    except (OSError, ValueError) as err:  # a name too long for the filesystem, a NUL byte, a bad URI
        raise ResumeError(f"storage_path: {str(config.storage_path)[:200]} cannot be used: {err}") from None
    except Exception as err:  # pyarrow's errors for a URI it cannot open
        if type(err).__module__.startswith("pyarrow"):
            raise ResumeError(f"storage_path: {str(config.storage_path)[:200]} cannot be used: {err}") from None
        raise
    if resume and not exists:
        raise ResumeError(f"--resume: no earlier run of sweep '{config.name}' under {tune_path}")
    if last is None or not exists or (last.ended and not resume):
        return None
    if not last.ended and not resume:
        raise ResumeError(
            f"sweep '{config.name}' was interrupted (its state is under {tune_path}): pass --resume to continue it, "
            f"or delete {results_dir(config)} to start over"
        )
    if last.ended and last.config_digest not in (None, config_digest(config)):
        return None  # an edited file after a pass that ended: its new cells run in a new pass
    try:
        repair_tune_state(tune_path)
    except CorruptTuneState as err:
        raise ResumeError(f"--resume: {err}") from None
    return last


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


def _quiet_tune_advice() -> None:
    """fmx says how to resume (`fmx sweep FILE --resume`); Tune's own hint names its Python API instead, and
    its metrics loader warns about trials that never reported, which fmx records itself (so does its list of
    trials that did not complete)."""
    class _DropRestoreHint(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:  # fmx's summary counts the trials that did not finish
            return not any(text in record.getMessage() for text in ("Tuner.restore", "Trials did not complete"))

    logging.getLogger("ray.tune.tune").addFilter(_DropRestoreHint())
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


#: What a trial that only waits for its TorchTrainer holds itself (its workers hold the real resources).
WAITING_TRIAL_CPUS = 0.01


class Unschedulable(RuntimeError):
    """No node can ever run one of the sweep's workers: Tune would wait forever."""


def trial_side_cpus(config: SweepConfig) -> float:
    """CPUs a trial holds beside its Ray Train workers (none are separate for an in-trial training)."""
    return WAITING_TRIAL_CPUS if config.train.uses_torch_trainer else 0.0


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
class PassResult:
    states: dict[str, TrialState]
    fixed: Reconciled


def run_sweep(
    config: SweepConfig,
    tracking_uri: str,
    address: str | None = None,
    resume: bool = False,
    console: Console | None = None,
    sweep_file: str = "FILE",
) -> SweepOutcome:
    """Restore the last pass where --resume asks, then run a new pass of whatever the file's cells still
    need (orchestrator.registry), then write the tables of the file's cells."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # fmx prints its own progress lines
    # ... and one line per failed trial with its cause; Tune's traceback of it stays in the trial's error file.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    console = console or Console(stderr=True)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    _quiet_tune_advice()
    start = time.perf_counter()
    plan = plan_sweep(config)
    storage = storage_dir(config)
    if "://" not in storage:
        Path(storage).mkdir(parents=True, exist_ok=True)
    restore = check_resume_state(config, resume)
    # A sweep run before: what its cells hold is read before Ray starts, so a damaged record ends the command
    # with its one line and nothing started (cells are read after a restored pass instead: it adds rows).
    known = existing_experiment(tracking_uri, config.name)
    cells = read_cells(tracking_uri, known) if known is not None and restore is None else None
    # Ray's start-up is the longest pole (~3-5 s here, mostly waiting for its processes); a new sweep's MLflow
    # first start (imports, schema migrations) runs meanwhile. The driver never imports PyTorch (trial_entry).
    with ThreadPoolExecutor(max_workers=1) as pool:
        experiment = pool.submit(ensure_experiment, tracking_uri, config.name, config.description.strip() or None)
        init_ray(address)
        experiment_id = experiment.result()
    check_schedulable(config, address, console)
    passes = read_passes(storage, legacy_state=restore is not None and restore.work is None)
    results: list[PassResult] = []
    restored: frozenset[str] = frozenset()
    if restore is not None:
        work = restore.items() or _every_training(config, plan)
        results.append(_run_pass(config, plan, work, restore.name, tracking_uri, experiment_id, address, console, sweep_file, True))
        restored = frozenset(w.cell for w in work)
        passes = [*passes[:-1], PassEntry(restore.name, restore.config_digest, [w.as_dict() for w in work], not results[-1].fixed.interrupted)]
        write_passes(storage, passes)
    pass_plan = None
    previous_digest = passes[-1].config_digest if passes else None
    if not results or not results[-1].fixed.interrupted:
        cells = cells if cells is not None and not results else read_cells(tracking_uri, experiment_id)
        pass_plan = plan_pass(config, plan, cells, storage, retry_failed=resume, exclude=restored)
        mark_current(config, plan, tracking_uri, experiment_id)
        console.print(f"sweep '{config.name}': {pass_plan.summary()}", highlight=False)
        if pass_plan.work:
            drop_runs(tracking_uri, experiment_id, [w.cell for w in pass_plan.trainings if w.cell in cells])
            name = next_pass_name(passes)
            write_sweep_state(results_dir(config), tracking_uri, experiment_id, config)
            entry = PassEntry(name, config_digest(config), [w.as_dict() for w in pass_plan.work], False)
            write_passes(storage, passes := [*passes, entry])
            results.append(_run_pass(config, plan, pass_plan.work, name, tracking_uri, experiment_id, address, console, sweep_file, False))
            write_passes(storage, [*passes[:-1], PassEntry(**{**asdict(entry), "ended": not results[-1].fixed.interrupted})])
    outcome_runs = collect_runs(tracking_uri, config.name, publish_view=True)
    runs_path: Path | None
    table_path: Path | None
    # An edited file may leave cells out of the tables: fewer rows are then what was asked for.
    edited = previous_digest not in (None, config_digest(config)) or (pass_plan is not None and not pass_plan.work)
    try:
        runs_path, table_path = write_tables(outcome_runs, results_dir(config), allow_fewer=edited)
        not_written = None
    except FewerRowsError as err:
        runs_path = table_path = None
        not_written = str(err)
    states = {k: v for result in results for k, v in result.states.items()}
    fixed = Reconciled()
    for result in results:
        fixed.repaired.update(result.fixed.repaired)
        fixed.unrecorded.update(result.fixed.unrecorded)
    fixed.interrupted = results[-1].fixed.interrupted if results else []
    failed = sum(1 for s in states.values() if s.status == "ERROR")
    seconds = time.perf_counter() - start
    return SweepOutcome(
        outcome_runs, runs_path, table_path, len(plan.trainings), failed, seconds, fixed.unrecorded, fixed.interrupted,
        fixed.repaired, not_written, pass_plan,
    )  # fmt: skip


def _every_training(config: SweepConfig, plan: SweepPlan) -> list[WorkItem]:
    """A pass started before the ledger: every training of the file."""
    return [WorkItem(key, training_cell(config, key), TRAIN, "new") for key in plan.trainings]


def _run_pass(
    config: SweepConfig, plan: SweepPlan, work: list[WorkItem], name: str, tracking_uri: str, experiment_id: str,
    address: str | None, console: Console, sweep_file: str, restore: bool,
) -> PassResult:  # fmt: skip
    """One Tune experiment over the pass's work items (restored from its state where `restore`), then the
    driver's repair of every training record the trials could not finish themselves."""
    from ray import tune

    from orchestrator.progress import SweepProgress

    storage = storage_dir(config)
    setup = _trial_setup(config, plan, tracking_uri, experiment_id, storage, work, name)
    trainable = tune.with_resources(tune.with_parameters(training_trial, setup=setup), _trial_resources(config, work))
    progress = SweepProgress(len(work), config.train.steps, console)
    tune_path = _join(storage, name)
    if restore:
        # Errored trials are retried too (from their last checkpoint): a crash or a killed worker is repaired.
        tuner = tune.Tuner.restore(tune_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(work),
            tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=_concurrency(config, address)),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=config.train.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[progress, StateBackup(tune_path), TrialLedger(tune_path)],
                verbose=0,
            ),
        )
    try:
        tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C while Tune was stopping: what is saved is still resumable
        pass
    states = tune_trial_states(tune_path)
    evaluations = {run.data.tags[TAG_CELL]: (run, content) for run, content in read_evaluations(tracking_uri, experiment_id, current_only=False)
                   if TAG_CELL in run.data.tags}  # fmt: skip
    fixed = reconcile(config, plan, work, name, tracking_uri, experiment_id, states, sweep_file, evaluations)
    return PassResult(states, fixed)


def _param_space(work: list[WorkItem]) -> dict[str, object]:
    """What Tune stores per trial (params.json): only the training key; all else is in `_trial_setup`."""
    from ray import tune

    return {"key": tune.grid_search([w.key.as_dict() for w in work])}


def _trial_setup(
    config: SweepConfig, plan: SweepPlan, tracking_uri: str, experiment_id: str, storage: str, work: list[WorkItem],
    pass_name: str,
) -> PassSetup:  # fmt: skip
    """What each trial of the pass is to do, resolved once here and handed to it through Ray's object store
    rather than Tune's stored params (params.json holds only the training key)."""
    return build_pass_setup(config, plan, work, tracking_uri=tracking_uri, experiment_id=experiment_id,
                            storage_root=storage, train_storage=_join(storage, TRAIN_DIR), pass_name=pass_name)  # fmt: skip


def collect_rows(tracking_uri: str, sweep: str) -> tuple[str, list[EvalRow]]:
    """The sweep's experiment id and its evaluation rows, rebuilt from the MLflow experiment alone."""
    experiment_id = find_experiment(tracking_uri, sweep)
    if experiment_id is None:
        raise LookupError(f"no MLflow experiment named '{sweep}' at {tracking_uri}")
    return experiment_id, evaluation_rows(read_evaluations(tracking_uri, experiment_id))


def collect_runs(tracking_uri: str, sweep: str, publish_view: bool = False) -> pd.DataFrame:
    """runs.parquet's rows, rebuilt from the MLflow experiment alone; `publish_view` also (re)writes the
    experiment's comparison view in the MLflow UI from them (orchestrator.views)."""
    experiment_id, rows = collect_rows(tracking_uri, sweep)
    if publish_view:
        publish_comparison_view(tracking_uri, experiment_id, rows)
    return rows_frame(rows)


def publish_comparison_view(tracking_uri: str, experiment_id: str, rows: list[EvalRow]) -> None:
    """The view is a convenience of the UI: a store that refuses it (an outage at this moment) costs a warning,
    never the sweep's tables."""
    from orchestrator.views import save_comparison_view

    try:
        save_comparison_view(tracking_uri, experiment_id, rows)
    except Exception as err:  # noqa: BLE001 - MlflowException, OSError, sqlite errors: all only a warning here
        Console(stderr=True).print(f"[yellow]warning:[/] the MLflow comparison view was not saved: {err}", highlight=False)
