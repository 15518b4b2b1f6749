"""A training run's whole record in MLflow: its loss curve and timings, one child run per evaluation, and its
rows (evaluations.json, the tables' source). Written by the trial itself, and by the driver for a trial
that could not finish its own record (orchestrator.reconcile)."""

from __future__ import annotations

from typing import Any

from orchestrator.evaluation_runs import log_evaluation_runs
from orchestrator.records import totals_of
from orchestrator.rows import FIELD_NAMES, EvalRow, rows_from_dicts
from orchestrator.tracking import TrialRun


def log_trial_record(
    run: TrialRun, summary: dict[str, Any], rows: list[EvalRow], record: dict[str, Any], resumed_from: int
) -> list[EvalRow]:
    """Everything a trial's runs show but its plots: the training run's loss curve and timings, one child run per
    evaluation, and the rows (evaluations.json, the tables' source). Shared by the trial and by the driver
    repairing a trial's record. Returns the rows as recorded."""
    totals = totals_of(record)
    summary = {**summary, **totals, "resumed_from_step": resumed_from}
    shared = {k: v for k, v in summary.items() if k in FIELD_NAMES and k != "error"}  # a row keeps its own error
    rows = [row.replace(**shared) for row in rows]
    losses = [(int(s), float(v)) for s, v in record.get("losses", [])]
    step = totals["train_steps"]
    run.log_metrics({"train_loss_final": losses[-1][1]} if losses else {}, step)
    run.log_history("train_loss", losses)
    run.log_metrics(
        {"train_seconds": totals["train_seconds"], "compute_seconds": totals["compute_seconds"], "resumed_from_step": resumed_from},
        step,
    )
    log_evaluation_runs(run, rows)
    run.log_evaluations(rows, summary)
    return rows


def log_added_evaluations(run: TrialRun, content: dict[str, Any] | None, rows: list[EvalRow]) -> list[EvalRow]:
    """Evaluations added to a trained cell's run (an evaluation-only trial's rows, or the failed rows the driver
    writes for one that died): a child run each, and evaluations.json rewritten with the old rows and the new
    (a row of the same evaluation replaced). `content` is the run's evaluations.json as it was. Returns the rows
    as recorded."""
    content = content or {"summary": {}, "rows": []}
    summary = content.get("summary", {})
    shared = {k: v for k, v in summary.items() if k in FIELD_NAMES and k not in ("error", "eval_digest")}
    rows = [row.replace(**shared) for row in rows]
    log_evaluation_runs(run, rows)
    merged = {r.evaluation_key: r for r in rows_from_dicts(content.get("rows", []))}
    merged.update({r.evaluation_key: r for r in rows})
    run.log_evaluations(list(merged.values()), summary)
    return rows
