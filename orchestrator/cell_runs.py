"""Which of a sweep's MLflow runs are current, and replacing a cell's runs.

A sweep file edited after a run keeps the runs of cells it no longer asks for: they are tagged not current
(TAG_CURRENT), so the tables and the comparison view show the file's cells only, and nothing is lost. A
cell trained again from step 0 gets a new run; its old run and evaluation runs are soft-deleted first.
"""

from __future__ import annotations

from typing import Any

from orchestrator.cells import eval_digest, training_cell
from orchestrator.schema import SweepConfig
from orchestrator.tags import TAG_EVALUATION, TAG_PARENT, TAG_RUN_NAME, TAG_TRAIN_AXES, TAG_TRIAL
from orchestrator.plan import SweepPlan, TrainingKey
from orchestrator.mlflow_retry import retrying
from orchestrator.tracking import client, store_location
from orchestrator.tags import TAG_CELL, TAG_CURRENT, search_all


def _evaluation_of(tag: str) -> tuple[str | None, int, str] | None:
    """(eval digest, step, setting label) from a child's evaluation key `digest/step300/rk4_nfe8/model[/k2]`."""
    parts = tag.split("/")
    if parts and not parts[0].startswith("step"):
        digest, parts = parts[0], parts[1:]
    else:
        digest = None
    if len(parts) < 2 or not parts[0].startswith("step") or not parts[0][4:].isdigit():
        return None
    return digest, int(parts[0][4:]), parts[1]


def mark_current(config: SweepConfig, plan: SweepPlan, uri: str, experiment_id: str) -> int:
    """Tag every training and evaluation run of the experiment current or not (TAG_CURRENT) for this file's
    cells: the tables and the comparison view show the current ones; the others stay in MLflow, marked.
    Returns how many runs changed."""
    mlflow_client = client(uri)
    where = store_location(uri)
    keys = {training_cell(config, key): key for key in plan.trainings}
    current_cells = set(keys)
    digest = eval_digest(config)
    current_evaluations = {(digest, step, s.label) for step in plan.eval_steps for s in plan.settings}
    runs = retrying(lambda: search_all(mlflow_client, experiment_id, ""), "list the runs", where=where)
    parents = {r.info.run_id: r.data.tags[TAG_CELL] in current_cells for r in runs if TAG_CELL in r.data.tags}
    changed = 0
    for run in runs:
        tags = run.data.tags
        if TAG_CELL in tags:
            want = parents[run.info.run_id]
        elif TAG_EVALUATION in tags:
            want = parents.get(tags.get(TAG_PARENT, ""), False) and _evaluation_of(tags[TAG_EVALUATION]) in current_evaluations
        else:
            continue
        value = "true" if want else "false"
        if tags.get(TAG_CURRENT) != value:
            retrying(lambda run=run, value=value: mlflow_client.set_tag(run.info.run_id, TAG_CURRENT, value), "mark a run", where=where)
            changed += 1
        if want and TAG_CELL in tags:
            changed += _name_as_the_file_does(mlflow_client, run, keys[tags[TAG_CELL]], where)
    return changed


def _name_as_the_file_does(mlflow_client: Any, run: Any, key: TrainingKey, where: str) -> int:
    """A current cell's run named as this file names its training (trial id, grid.train values): 1 if renamed."""
    names = {TAG_TRIAL: key.trial_id, TAG_TRAIN_AXES: key.axes_label or "", TAG_RUN_NAME: key.trial_id}
    stale = {k: v for k, v in names.items() if run.data.tags.get(k) != v}
    for name, value in stale.items():
        retrying(lambda name=name, value=value: mlflow_client.set_tag(run.info.run_id, name, value), "name a reused run", where=where)
    return 1 if stale else 0


def drop_runs(uri: str, experiment_id: str, cells: list[str]) -> int:
    """Delete (MLflow's soft delete: restorable, hidden from searches) every run of these cells and their
    evaluation runs, before the cells are trained again from step 0: a new training never mixes into an old
    run's rows, params or loss curve. Returns how many runs were deleted."""
    if not cells:
        return 0
    mlflow_client = client(uri)
    where = store_location(uri)
    deleted = 0
    for cell in cells:
        parents = retrying(lambda cell=cell: search_all(mlflow_client, experiment_id, f"tags.`{TAG_CELL}` = '{cell}'"), "list a cell's runs", where=where)
        for parent in parents:
            query = f"tags.`{TAG_PARENT}` = '{parent.info.run_id}'"
            children = retrying(lambda query=query: search_all(mlflow_client, experiment_id, query), "list the evaluation runs", where=where)
            for run in [*children, parent]:
                retrying(lambda run=run: mlflow_client.delete_run(run.info.run_id), "delete a replaced run", where=where)
                deleted += 1
    return deleted
