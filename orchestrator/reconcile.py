"""After Tune returns, make every planned trial's MLflow record whole, from the driver.

A trial records itself when it can. When it cannot (its worker was killed with SIGKILL or by the
out-of-memory killer, the driver was interrupted, MLflow stayed unreachable past the trial's retries, a
store lost a run's rows), its run would stay RUNNING with no rows. The driver then writes the record from
the trial's last checkpoint (`record.json`, read without PyTorch): the rows evaluated so far, a failed
row with the reason for every evaluation it never reached, the loss curve, and a FINISHED or FAILED end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.artifacts import send_missing
from orchestrator.cell_store import cell_dir
from orchestrator.folders import TRAIN_DIR
from orchestrator.schema import SweepConfig
from orchestrator.cells import eval_digest
from orchestrator.plan import SweepPlan, train_run_name
from orchestrator.records import complete_rows, read_record, trial_identity, trial_params, trial_summary
from orchestrator.pass_work import TRAIN, WorkItem
from orchestrator.rows import EvalRow, rows_from_dicts
from orchestrator.trial_record import log_added_evaluations, log_trial_record
from orchestrator.mlflow_retry import TrackingUnavailable, retrying
from orchestrator.tracking import TrialRun, client, store_location
from orchestrator.tags import TAG_CELL, TAG_NODE, search_all  # fmt: skip

INTERRUPTED = "interrupted before it finished: continue with `fmx sweep {file} --resume`"
TERMINAL = ("FINISHED", "FAILED")


@dataclass(frozen=True)
class TrialState:
    """What Tune knows of one trial once `fit()` has returned."""

    status: str  # TERMINATED, ERROR, or one that means it never finished (PENDING, RUNNING, PAUSED)
    error: str | None
    checkpoint: Any | None  # ray.train.Checkpoint of its latest report, if any

    @property
    def finished(self) -> bool:
        return self.status in ("TERMINATED", "ERROR")


@dataclass
class Reconciled:
    """What the driver had to write itself, by trial id."""

    repaired: dict[str, str | None] = field(default_factory=dict)  # trial -> reason (None: rows complete)
    interrupted: list[str] = field(default_factory=list)
    unrecorded: dict[str, str] = field(default_factory=dict)  # failed without ever creating its MLflow run


def _record_of(checkpoint: Any | None) -> dict[str, Any]:
    if checkpoint is None:
        return {}
    try:
        with checkpoint.as_directory() as directory:
            return read_record(directory) or {}
    except Exception:  # noqa: BLE001 - a checkpoint lost with its storage: nothing to recover from it
        return {}


def train_run_record(storage: str, run_name: str) -> dict[str, Any]:
    """The newest record of a TorchTrainer trial's own Ray Train run (`plan.train_run_name`). Its workers
    report checkpoints to Ray Train, not to Tune, so Tune's trial holds none: a trial killed mid-way is
    recovered from there instead. Local (or mounted) storage only; a cloud URI gives nothing to read without
    PyTorch's helpers."""
    if "://" in storage:
        return {}
    folder = Path(storage) / TRAIN_DIR / run_name
    records = [r for r in map(read_record, sorted(p.parent for p in folder.glob("checkpoint_*/record.json"))) if r]
    return max(records, key=lambda r: (int(r.get("step", 0)), len(r.get("rows", []))), default={})


def _rows_complete(content: dict[str, Any] | None, plan: SweepPlan, digest: str) -> bool:
    """Whether the run holds a row of every planned evaluation under the current evaluation settings."""
    if content is None:
        return False
    rows = [r for r in content.get("rows", []) if r.get("eval_digest") in (None, digest)]
    return len(rows) >= len(plan.settings) * len(plan.eval_steps)


def reconcile(
    config: SweepConfig,
    plan: SweepPlan,
    work: list[WorkItem],
    pass_name: str,
    uri: str,
    experiment_id: str,
    states: dict[str, TrialState],
    sweep_file: str,
    evaluations: dict[str, tuple[Any, dict[str, Any]]],
    storage: str,
) -> Reconciled:
    """Write the record of every training of the pass whose run is missing, not ended, or short of rows (an
    evaluation-only trial writes its own rows, or leaves them missing for the next pass).
    `evaluations` is what MLflow already holds (training cell -> (run, evaluations.json)); `storage` the sweep's."""
    digest = eval_digest(config)
    mlflow_client = client(uri)
    runs = retrying(lambda: search_all(mlflow_client, experiment_id, f"tags.`{TAG_CELL}` != ''"), "list runs", where=store_location(uri))
    run_of = {r.data.tags[TAG_CELL]: r for r in runs}
    out = Reconciled()
    failures: list[TrackingUnavailable] = []
    for item in work:
        trial = item.key.trial_id
        state = states.get(trial, TrialState("PENDING", None, None))
        if not state.finished:
            out.interrupted.append(trial)
        run = run_of.get(item.cell)
        held = evaluations.get(item.cell)
        if item.mode != TRAIN:
            try:
                reason = _fail_missing_evaluations(config, plan, item, uri, experiment_id, state, held, run, sweep_file)
            except TrackingUnavailable as err:
                failures.append(err)
                continue
            if reason is not None:
                out.repaired[trial] = reason
            continue
        if run is not None and run.info.status in TERMINAL and state.finished and _rows_complete(held and held[1], plan, digest):
            continue
        reason = state.error if state.status == "ERROR" else None
        if not state.finished:
            reason = INTERRUPTED.format(file=sweep_file)
        from_train = config.train.uses_torch_trainer
        record = _record_of(state.checkpoint) or (train_run_record(storage, train_run_name(trial, item.cell, pass_name)) if from_train else {})
        rows = rows_from_dicts(record.get("rows", []))
        if reason is None and len(rows) < len(plan.settings) * len(plan.eval_steps):
            reason = "the trial ended without a record of this evaluation (see its Ray logs)"
        rows = complete_rows(rows, plan.settings, plan.eval_steps, reason)
        if run is None and state.status == "ERROR":
            out.unrecorded[trial] = reason or "the trial failed"
        try:
            _write(config, storage, item, uri, experiment_id, record, rows, reason, interrupted=not state.finished, run=run)
        except TrackingUnavailable as err:  # the others may still get through; this one waits for --resume
            failures.append(err)
            continue
        out.repaired[trial] = reason
    if failures:
        raise failures[0]
    return out


def _fail_missing_evaluations(
    config: SweepConfig, plan: SweepPlan, item: WorkItem, uri: str, experiment_id: str, state: TrialState,
    held: tuple[Any, dict[str, Any]] | None, run: Any | None, sweep_file: str,
) -> str | None:  # fmt: skip
    """An evaluation-only trial that died or was stopped before it recorded its rows: each evaluation it was
    to make and its run does not hold becomes a failed row with the reason (retried by `--resume`), so no
    trial that was started ends without rows. Returns the reason where rows were written."""
    if state.status == "TERMINATED" or run is None:
        return None
    reason = (state.error or "the trial failed") if state.status == "ERROR" else INTERRUPTED.format(file=sweep_file)
    content = held[1] if held is not None else None
    identity = trial_identity(config, item.key)
    have = {(r.train_step, r.setting.label) for r in rows_from_dicts((content or {}).get("rows", []))
            if r.eval_digest == identity["eval_digest"]}  # fmt: skip
    settings = {s.label: s for s in plan.settings}
    rows = [EvalRow.of(settings[label], step, **identity, status="failed", error=reason)
            for step, labels in item.evaluate for label in labels if (step, label) not in have]  # fmt: skip
    if not rows:
        return None
    trial_run = TrialRun(uri, experiment_id, config.name, item.key, {}, item.cell, mark_running=False)
    log_added_evaluations(trial_run, content, rows)
    return reason


def _write(
    config: SweepConfig,
    storage: str,
    item: WorkItem,
    uri: str,
    experiment_id: str,
    record: dict[str, Any],
    rows: list[EvalRow],
    reason: str | None,
    interrupted: bool,
    run: Any | None,
) -> None:
    key = item.key
    trial_run = TrialRun(uri, experiment_id, config.name, key, trial_params(config, key), item.cell, mark_running=False)
    node = None if run is None else run.data.tags.get(TAG_NODE)
    summary = {**trial_summary(config, key, node, None), "error": reason, "trial_seconds": None}
    log_trial_record(trial_run, summary, rows, record, resumed_from=0)
    send_missing(trial_run, cell_dir(storage, item.cell))  # the plots of the evaluations it reached
    ok = reason is None and all(r.ok for r in rows)
    trial_run.finish("FINISHED" if ok else "FAILED", reason, interrupted=interrupted)
