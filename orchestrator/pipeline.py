"""The stages of `fmx sweep` that need Ray: run, reconcile, publish. `orchestrator.api.run_sweep` calls the
whole pipeline in order, each stage a module with one job and a typed value in and out; data flows down only:

    read            (orchestrator.sweep_file) file -> plain data, ${VAR} expanded in path fields
    validate        (orchestrator.validation) data -> SweepConfig (orchestrator.schema)
    plan            (orchestrator.planning)   SweepConfig + store -> PlannedSweep (checks done, lock held)
    --- this module (`run`), loaded once the plan holds: Ray Tune's import costs seconds a bad file never pays
    run             (orchestrator.tune_pass)  each pass's work items -> PassRun (Tune's trial states)
    reconcile       (orchestrator.reconcile)  PassRun -> every training's MLflow record whole
    publish         (orchestrator.publish)    MLflow -> runs.parquet, table.parquet, the comparison view

Each command runs one pass: whatever the file's cells still need (with `--resume`, what an interrupted pass
left, each training from its last checkpoint, and what failed). How the command ends (the table, counts, exit
code) is decided here and returned as a `SweepOutcome`; stopping early is a `SweepStopped` carrying its line
and exit code.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from orchestrator.disk import DiskFull, as_disk_full, full_disk_under, sweep_places
from orchestrator.errors import SweepInterrupted, SweepRefused, SweepStopped
from orchestrator.outcome import SweepOutcome
from orchestrator.ownership import OwnedElsewhere, check_owner, claim
from orchestrator.passes import PassEntry, next_pass_name, read_passes, write_passes
from orchestrator.planning import PlannedSweep
from orchestrator.publish import publish
from orchestrator.reconcile import Reconciled, reconcile
from orchestrator.cell_runs import drop_runs, mark_current
from orchestrator.pass_work import WorkItem, plan_pass, read_cells
from orchestrator.resume_points import with_resume_points
from orchestrator.sweep_guard import config_digest, write_sweep_state
from orchestrator.tags import TAG_CELL
from orchestrator.mlflow_retry import TrackingUnavailable
from orchestrator.tracking import DamagedRun, ensure_experiment, existing_experiment, read_evaluations
from orchestrator.tune_pass import (
    PassRun, Unschedulable, callers_ray, check_schedulable, init_ray, quiet_tune_advice, run_pass, stop_local_ray,
)


def run(planned: PlannedSweep, console: Console | None = None) -> SweepOutcome:
    """Run a planned sweep's passes on Ray, reconcile their records and publish its rows and tables; how it
    ended is the outcome, or a SweepStopped with its line and exit code. Releases the sweep's lock."""
    console = console or Console(stderr=True, soft_wrap=True)
    file = planned.file
    keep_ray = callers_ray()  # a Ray this sweep did not start is not this sweep's to stop
    try:
        _say_where(planned, console)
        return _run_planned(planned, console)
    except (KeyboardInterrupt, EOFError) as err:  # Ctrl-C outside Tune's own handling (Ray's start, the end)
        full = _full_disk(planned) if isinstance(err, EOFError) else None
        if full is not None:  # Tune ends with "Aborted." (an EOFError) when it cannot write its state
            raise _disk_full(full, file) from None
        raise SweepInterrupted(f"run `fmx sweep {file} --resume` to continue") from None
    except Unschedulable as err:
        raise SweepRefused(f"{file}: {err}") from None
    except DamagedRun as err:
        raise SweepRefused(str(err)) from None
    except TrackingUnavailable as err:
        raise SweepStopped(f"{err}; what the trials computed is kept in their checkpoints: run `fmx sweep {file} "
                           "--resume` once the store is back") from None  # fmt: skip
    except SweepStopped:
        raise
    except Exception as err:
        full = as_disk_full(err, places=_places(planned)) or _full_disk(planned)
        if full is None:
            raise
        raise _disk_full(full, file) from None
    finally:
        if not keep_ray:
            stop_local_ray()
        planned.lock.release()


def _full_disk(planned: PlannedSweep) -> DiskFull | None:
    """A DiskFull where a folder the sweep writes to is (nearly) out of space."""
    return full_disk_under(planned.folders.results, planned.tracking_uri, planned.folders.local_storage)


def _places(planned: PlannedSweep) -> list[Path]:
    """Where this machine writes for the sweep, and Ray its session files: what a full disk that named no
    path is looked for in."""
    return [*sweep_places(planned.folders.results, planned.tracking_uri, planned.folders.local_storage),
            Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir())]  # fmt: skip


def _start_ray(planned: PlannedSweep) -> None:
    """Ray started here (or joined at --address); a start that fails is one line naming its cause, exit 1."""
    try:
        init_ray(planned.address)
    except Exception as err:  # noqa: BLE001 - Ray's start fails in many ways (sockets, ports, memory): all end here
        full = as_disk_full(err, places=_places(planned))
        if full is not None:
            raise _disk_full(full, planned.file) from None
        what = "the local Ray did not start" if planned.local else f"cannot join the Ray cluster at --address {planned.address}"
        raise SweepStopped(f"{what}: {type(err).__name__}: {' '.join(str(err).split())[:300]}") from None


def _disk_full(full: DiskFull, file: str) -> SweepStopped:
    return SweepStopped(f"{full}: free some space, then run `fmx sweep {file} --resume`")


def _say_where(planned: PlannedSweep, console: Console) -> None:
    console.print(f"MLflow tracking: [bold]{planned.tracking_uri}[/]   (browse with: fmx ui)", highlight=False)
    if planned.local:
        return
    if not planned.config.storage_path:
        console.print(
            "[yellow]warning:[/] --address without `storage_path` in the sweep file: checkpoints go to this "
            "machine's results/ folder, which other machines of the cluster cannot reach", highlight=False
        )
    if not planned.tracking_uri.startswith(("http://", "https://", "databricks")):
        console.print(
            "[yellow]warning:[/] --address with a local MLflow store: trials on other machines cannot reach it; "
            "use --tracking-uri http://HEAD:5000 (see docs/cluster.md)", highlight=False
        )


def _run_planned(planned: PlannedSweep, console: Console) -> SweepOutcome:
    """Restore the last pass where --resume asks, then run a new pass of whatever the file's cells still need,
    then write the tables of the file's cells."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # fmx prints its own progress lines
    # ... and one line per failed trial with its cause; Tune's traceback of it stays in the trial's error file.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    quiet_tune_advice()
    start = time.perf_counter()
    config, folders, uri, restore = planned.config, planned.folders, planned.tracking_uri, planned.restore
    if not folders.is_uri:
        Path(folders.storage).mkdir(parents=True, exist_ok=True)
    # A sweep run before: what its cells hold is read before Ray starts, so a damaged record ends the command
    # with its one line and nothing started (cells are read after a restored pass instead: it adds rows).
    known = existing_experiment(uri, config.name)
    if known is not None:
        try:
            check_owner(uri, known, config.name, folders.results)
        except OwnedElsewhere as err:
            raise SweepRefused(str(err)) from None
    cells = read_cells(uri, known) if known is not None else None
    description = config.description.strip() or None
    if known is None:
        # A new sweep always has work. Ray's start-up is the longest pole (~3-5 s here, mostly waiting for its
        # processes); the store's first start (imports, schema migrations) runs meanwhile.
        with ThreadPoolExecutor(max_workers=1) as pool:
            experiment = pool.submit(ensure_experiment, uri, config.name, description)
            _start_ray(planned)
            experiment_id = experiment.result()
    else:  # Ray starts only if the pass has work: a sweep whose cells are all done only publishes its tables
        experiment_id = ensure_experiment(uri, config.name, description)
    claim(uri, experiment_id, folders.results)
    passes = read_passes(folders.storage, legacy_state=restore is not None and restore.work is None)
    previous_digest = passes[-1].config_digest if passes else None
    if restore is not None:
        # The pass --resume continues ends here: Tune's state of it is pickles, never handed back to Tune (the
        # storage is untrusted). A new pass runs what it left, each training from its own last checkpoint.
        passes = [*passes[:-1], replace(passes[-1], ended=True)]
    cells = cells if cells is not None else read_cells(uri, experiment_id)
    pass_plan = plan_pass(config, planned.plan, cells, folders.storage, retry_failed=planned.resume)
    work = with_resume_points(folders.storage, passes, pass_plan.work, {c for c, r in cells.items() if r.trained})
    pass_plan = replace(pass_plan, work=work)
    if work:
        _start_ray(planned)  # where it is up already (a new sweep), this does nothing
        check_schedulable(config, planned.address, console)
    mark_current(config, planned.plan, uri, experiment_id)
    console.print(f"sweep '{config.name}': {pass_plan.summary()}", highlight=False)
    done: Reconciled | None = None
    states: dict[str, str] = {}
    if work:
        # A training that starts over gets a new run; one that continues from a checkpoint keeps its own.
        drop_runs(uri, experiment_id, [w.cell for w in pass_plan.trainings if w.cell in cells and w.resume_from is None])
        name = next_pass_name(passes)
        write_sweep_state(folders.results, uri, experiment_id, config)
        entry = PassEntry(name, config_digest(config), [w.as_dict() for w in work], False)
        write_passes(folders.storage, passes := [*passes, entry])
        done = _run_and_reconcile(planned, work, name, experiment_id, console, states)
        if done.interrupted and (full := _full_disk(planned)) is not None:
            raise _disk_full(full, planned.file)  # Tune stops its trials when it cannot write its state: not an interruption
        write_passes(folders.storage, [*passes[:-1], replace(entry, ended=not done.interrupted)])
    elif restore is not None:
        write_passes(folders.storage, passes)
    # An edited file may leave cells out of the tables: fewer rows are then what was asked for.
    edited = previous_digest not in (None, config_digest(config)) or not work
    # An interrupted pass leaves runs.parquet as it was: what it did not finish is not "fewer rows asked for".
    interrupted = done is not None and bool(done.interrupted)
    published = publish(uri, config.name, folders.results, allow_fewer=edited and not interrupted, keep_existing=interrupted)
    done = done or Reconciled()
    return SweepOutcome(
        published.runs, published.runs_path, published.table_path, len(planned.plan.trainings),
        sum(1 for s in states.values() if s == "ERROR"), time.perf_counter() - start, done.unrecorded,
        done.interrupted, done.repaired, published.not_written, pass_plan, planned.file,
    )  # fmt: skip


def _run_and_reconcile(
    planned: PlannedSweep, work: list[WorkItem], name: str, experiment_id: str, console: Console, states: dict[str, str],
) -> Reconciled:  # fmt: skip
    """One pass on Tune, then the driver's repair of every training record its trials could not finish."""
    done: PassRun = run_pass(planned, work, name, experiment_id, console)
    states.update({trial: state.status for trial, state in done.states.items()})
    uri = planned.tracking_uri
    evaluations = {run.data.tags[TAG_CELL]: (run, content) for run, content in read_evaluations(uri, experiment_id, current_only=False)
                   if TAG_CELL in run.data.tags}  # fmt: skip
    return reconcile(planned.config, planned.plan, work, name, uri, experiment_id, done.states, planned.file, evaluations,
                     planned.folders.storage)  # fmt: skip
