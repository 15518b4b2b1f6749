"""The plan stage of a sweep: what this command will run, and every check that must pass before Ray starts.

From a validated sweep and the MLflow store: the sweep's folders (computed once), what the local machine can
hold, the Ray address, the sweep's lock, the pass that `--resume` restores, and the store's cells (train /
evaluate from stored weights / reuse). Every problem is a `SweepRefused` (exit 2) and nothing is written
before all of them pass; `--dry-run` reads the same plan without taking the lock or creating a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.safe_files import DamagedFile
from orchestrator.schema import SweepConfig
from orchestrator.errors import SweepRefused, SweepStopped
from orchestrator.folders import SweepFolders
from orchestrator.passes import FIRST_PASS, PassEntry, read_passes
from orchestrator.plan import SweepPlan, plan_sweep
from orchestrator.preflight import PreflightError, check_ray_address, is_local_ray, local_capacity_problem, local_gpu_count
from orchestrator.pass_work import PassPlan, plan_pass, read_cells
from orchestrator.store_check import sqlite_path
from orchestrator.sweep_guard import StoreMismatch, SweepBusy, SweepLock, check_store_matches, config_digest
from orchestrator.tracking import DamagedRun, TrackingError, check_tracking_uri, find_experiment
from orchestrator.out_folders import FolderUnusable, check_folder
from orchestrator.disk import as_disk_full

#: What a trial that only waits for its TorchTrainer holds itself (its workers hold the real resources).
WAITING_TRIAL_CPUS = 0.01


class ResumeError(SweepRefused):
    """--resume without earlier state, or earlier state without --resume."""


def trial_side_cpus(config: SweepConfig) -> float:
    """CPUs a trial holds beside its Ray Train workers (none are separate for an in-trial training)."""
    return WAITING_TRIAL_CPUS if config.train.uses_torch_trainer else 0.0


def folders_of(config: SweepConfig, root: Path | None = None) -> SweepFolders:
    return SweepFolders.of(config.name, config.storage_path, root)


@dataclass
class PlannedSweep:
    """A sweep cleared to run: its file, folders, store and Ray address, the grid's plan, the pass to
    restore (None: none), and the lock held until the command ends."""

    config: SweepConfig
    file: str
    folders: SweepFolders
    tracking_uri: str
    address: str | None
    resume: bool
    plan: SweepPlan
    restore: PassEntry | None
    lock: SweepLock

    @property
    def local(self) -> bool:
        return is_local_ray(self.address)


def check_resume_state(config: SweepConfig, folders: SweepFolders, resume: bool) -> PassEntry | None:
    """The pass `--resume` continues (None: nothing to continue); refuses to start anything new over a pass that
    was interrupted (its trials would be trained twice), and `--resume` with nothing to resume. After a pass
    that ended, a run without --resume (or with it, of an edited file) plans a new pass for what is missing."""
    from ray.tune import Tuner  # lazy: Ray Tune's import costs seconds that validation and --dry-run never need

    storage = folders.storage
    try:
        if not folders.is_uri and Path(storage).exists() and not Path(storage).is_dir():
            raise ResumeError(f"storage_path: {storage} is not a folder")
        passes = read_passes(storage, legacy_state=Tuner.can_restore(folders.tune(FIRST_PASS)))
        last = passes[-1] if passes else None
        tune_path = folders.tune(last.name if last else FIRST_PASS)
        exists = last is not None and Tuner.can_restore(tune_path)
    except DamagedFile as err:
        raise ResumeError(f"{err}: restore it from a copy, or delete {folders.results} to start over") from None
    except (OSError, ValueError) as err:  # a name too long for the filesystem, a NUL byte, a bad URI
        raise ResumeError(f"storage_path: {str(config.storage_path)[:200]} cannot be used: {err}") from None
    except Exception as err:  # pyarrow's errors for a URI it cannot open
        if type(err).__module__.startswith("pyarrow"):
            raise ResumeError(f"storage_path: {str(config.storage_path)[:200]} cannot be used: {err}") from None
        raise
    # --resume without a pass to restore (results/ deleted after a failure, as a message may advise) retries
    # what failed in MLflow: every failure stays repairable by the command fmx names.
    if last is None or not exists or (last.ended and not resume):
        return None
    if not last.ended and not resume:
        raise ResumeError(
            f"sweep '{config.name}' was interrupted (its state is under {tune_path}): pass --resume to continue it, "
            f"or delete {folders.results} to start over"
        )
    if last.ended and last.config_digest not in (None, config_digest(config)):
        return None  # an edited file after a pass that ended: its new cells run in a new pass
    return last


def _check_local_capacity(config: SweepConfig, file: str) -> None:
    problem = local_capacity_problem(config, file, extra_cpus=trial_side_cpus(config))
    if problem is not None:
        raise SweepRefused(str(problem))
    gpus = local_gpu_count() if config.train.use_gpu else None
    if gpus is not None and gpus < config.train.num_workers:
        raise SweepRefused(
            f"{file}: train.use_gpu: {config.train.num_workers} worker(s) need a GPU each, but this machine has "
            f"{gpus}; set use_gpu: false, or pass --address of a cluster with GPUs"
        )


def prepare(config: SweepConfig, file: str, tracking_uri: str, address: str | None, resume: bool) -> PlannedSweep:
    """Everything checked before Ray starts: the tracking URI, local capacity, the Ray address, the sweep's
    earlier state and store, and its lock (held until the command exits). Any problem is a SweepRefused; bad
    input writes nothing (the results folder is created only once every check passed)."""
    try:
        check_tracking_uri(tracking_uri)
    except TrackingError as err:
        raise SweepRefused(f"--tracking-uri: {err}") from None
    if is_local_ray(address):
        _check_local_capacity(config, file)
    plan = plan_sweep(config)  # before the lock: nothing may raise between taking and handing it on
    folders = folders_of(config)
    try:  # nothing is created yet: a folder that cannot be one is refused before Ray, the store or a lock
        check_folder(folders.results, "results folder")
        if folders.local_storage is not None:
            check_folder(folders.local_storage, f"{file}: storage_path")
    except FolderUnusable as err:
        raise SweepRefused(str(err)) from None
    lock = SweepLock(folders.results, folders.local_storage)
    try:
        check_ray_address(address)
        lock.acquire(config.name, existing_only=True)  # a sweep running says so before its state is judged
        restore = check_resume_state(config, folders, resume)
        if resume:  # a pass to restore must be of this very file; any --resume must log to the same store
            check_store_matches(folders.results, tracking_uri, config, file, same_file=restore is not None)
        if not lock.held:  # only now may the folder be created: bad input writes nothing
            lock.acquire(config.name)
    except (PreflightError, StoreMismatch, SweepBusy) as err:
        lock.release()
        raise SweepRefused(str(err)) from None
    except SweepRefused:
        lock.release()
        raise
    except OSError as err:  # the folders could not be made after all (a full disk, a read-only mount, /proc)
        lock.release()
        full = as_disk_full(err, places=[folders.results] + ([folders.local_storage] if folders.local_storage else []))
        if full is not None:
            raise SweepStopped(str(full)) from None
        raise SweepRefused(f"cannot create '{err.filename}': {err.strerror or err}") from None
    return PlannedSweep(config, file, folders, tracking_uri, address, resume, plan, restore, lock)


@dataclass(frozen=True)
class Preview:
    """What `--dry-run` shows against the store: the pass it would run, or why nothing would be reused."""

    uri: str
    pass_plan: PassPlan | None
    nothing_reused: str | None = None


def preview(config: SweepConfig, tracking_uri: str, resume: bool) -> Preview:
    """What a run would train, evaluate from stored weights and reuse, judged against what MLflow holds (read
    only: a store that does not exist yet is not created). A damaged run record is a SweepRefused."""
    db = sqlite_path(tracking_uri)
    try:
        if db is not None and not db.is_file():
            raise TrackingError(f"no MLflow store at {db} yet")
        check_tracking_uri(tracking_uri)
        experiment_id = find_experiment(tracking_uri, config.name)
    except TrackingError as err:
        return Preview(tracking_uri, None, f"nothing is reused ({err}): every training would run")
    if experiment_id is None:
        return Preview(tracking_uri, None, f"nothing is reused (no experiment '{config.name}' at {tracking_uri} yet): every training would run")
    try:
        cells = read_cells(tracking_uri, experiment_id)
    except DamagedRun as err:
        raise SweepRefused(str(err)) from None
    return Preview(tracking_uri, plan_pass(config, plan_sweep(config), cells, folders_of(config).storage, retry_failed=resume))
