"""One MLflow child run per evaluation, nested under its training run through MLflow's own parent-run tag.

Each child carries the same param names (path, objective, coupling, seed, solver, tol, nfe_budget, train_step,
dequant_draws, weights) and metric names (nfe, nll_nats or bits_per_dim, the sample metric, ode_error, ...),
all from `EvalRow`, so that the runs table, the compare view and its groups line up methods against solver
settings, and a filter like `params.solver = 'dopri5' and params.path = 'ot'` finds exactly
those evaluations. A child is found again by its evaluation key, so resumes and retries never double it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from orchestrator.rows import EvalRow
from orchestrator.tags import (
    TAG_CURRENT, TAG_ERROR, TAG_EVALUATION, TAG_OF_TRIAL, TAG_PARENT, TAG_RUN_NAME, TAG_SWEEP, search_all,
)

T = TypeVar("T")


class ParentRun(Protocol):
    """What a child run needs of its training run (orchestrator.tracking.TrialRun)."""

    client: Any
    run_id: str
    experiment_id: str
    tags: dict[str, str]

    def retrying(self, call: Callable[[], T], what: str) -> T: ...


def log_evaluation_runs(parent: ParentRun, rows: list[EvalRow]) -> dict[str, str]:
    """Create (or complete) the child run of every row; returns evaluation key -> child run id."""
    from mlflow.entities import Metric, Param, RunTag  # `import mlflow` costs ~1.4 s: not at import

    client = parent.client
    query = f"tags.`{TAG_PARENT}` = '{parent.run_id}'"
    existing = parent.retrying(lambda: search_all(client, parent.experiment_id, query), "list the evaluation runs")
    children = {run.data.tags.get(TAG_EVALUATION): run for run in existing}
    out: dict[str, str] = {}
    for row in rows:
        key = row.evaluation_key
        status = "FINISHED" if row.ok else "FAILED"
        child = children.get(key)
        if child is not None and child.info.status == status:  # already complete: a resume adds nothing
            out[key] = child.info.run_id
            continue
        end_ms: int | None = None
        if child is None:
            tags = {TAG_PARENT: parent.run_id, TAG_EVALUATION: key, TAG_OF_TRIAL: row.trial_id or "", TAG_CURRENT: "true",
                    TAG_RUN_NAME: row.child_name()}  # fmt: skip
            tags.update({k: v for k, v in parent.tags.items() if k == TAG_SWEEP})
            # The child is written once its evaluation is done: its start and end say how long that took, so
            # the UI's Duration column is the evaluation's time, not the milliseconds of the writing.
            end_ms = int(time.time() * 1000)
            began = end_ms - _duration_ms(row)
            info = parent.retrying(
                lambda tags=tags: client.create_run(parent.experiment_id, start_time=began, tags=tags,
                                                    run_name=tags[TAG_RUN_NAME]).info,  # fmt: skip
                "create an evaluation run",
            )
            run_id, start_ms = info.run_id, int(info.start_time)
            params = [Param(k, v) for k, v in row.child_params().items()]
            parent.retrying(lambda: client.log_batch(run_id, params=params), "log an evaluation's params")
        else:  # written before (by the driver's repair, say) with another outcome: bring it up to date
            run_id, start_ms = child.info.run_id, int(child.info.start_time)
            if row.ok and TAG_ERROR in child.data.tags:
                parent.retrying(lambda: client.delete_tag(run_id, TAG_ERROR), "clear an evaluation's old failure")
        step = int(row.train_step or 0)
        metrics = [Metric(k, v, start_ms + step, step) for k, v in row.child_metrics().items()]
        tags_out = [RunTag(TAG_ERROR, row.error[:4000])] if row.error else []
        parent.retrying(lambda: client.log_batch(run_id, metrics=metrics, tags=tags_out), "log an evaluation's metrics")
        parent.retrying(lambda: client.set_terminated(run_id, status=status, end_time=end_ms), "end an evaluation run")
        out[key] = run_id
    return out


def _duration_ms(row: EvalRow) -> int:
    """The evaluation's own time in milliseconds (0 where it was not measured: a failure before it ran)."""
    seconds = row.eval_seconds
    return int(round(1000 * seconds)) if seconds is not None and seconds == seconds and seconds > 0 else 0
