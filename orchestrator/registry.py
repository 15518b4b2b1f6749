"""fmx's cell registry: which trainings and evaluations of a sweep file exist already, and what is missing.

The registry is MLflow (each training run carries its cell key, `fmx.cell`, and its rows) plus the weights
of each evaluation step on the sweep's storage (orchestrator.cell_store). Planning a pass compares the file's
cells with it: a new training cell trains; a trained cell missing some evaluations is evaluated from its
stored weights (no retraining); a cell with every evaluation is reused. Tune then runs only that work, in a
Tune experiment of its own (Tune cannot change a search space on restore; fmx never asks it to).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.cell_store import cell_dir, has_complete, step_dir
from orchestrator.cells import eval_digest, training_cell
from orchestrator.schema import SweepConfig
from orchestrator.plan import SweepPlan, TrainingKey
from orchestrator.rows import EvalRow
from orchestrator.tracking import (
    TAG_CELL, TAG_CURRENT, TAG_ERROR, client, load_evaluations, retrying, search_all, store_location,
)  # fmt: skip

TRAIN, EVALUATE = "train", "evaluate"


@dataclass(frozen=True)
class CellRecord:
    """What MLflow holds of one training cell."""

    run_id: str
    status: str  # the MLflow run's status: FINISHED, FAILED, RUNNING, ...
    error: str | None
    evaluated: frozenset[tuple[str | None, int, str]]  # (eval digest, step, setting label) of every row

    @property
    def trained(self) -> bool:
        return self.status == "FINISHED"


@dataclass(frozen=True)
class WorkItem:
    """One Tune trial of a pass: train a cell (and evaluate it everywhere), or evaluate a trained one."""

    key: TrainingKey
    cell: str
    mode: str  # TRAIN or EVALUATE
    why: str
    evaluate: tuple[tuple[int, tuple[str, ...]], ...] = ()  # EVALUATE: (step, setting labels) still missing

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key.as_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkItem:
        evaluate = tuple((int(step), tuple(labels)) for step, labels in data.get("evaluate", ()))
        return cls(TrainingKey(**data["key"]), data["cell"], data["mode"], data["why"], evaluate)

    @property
    def evaluations(self) -> int:
        return sum(len(labels) for _, labels in self.evaluate)


@dataclass
class PassPlan:
    """What one `fmx sweep` still has to do for its file, and what it reuses."""

    work: list[WorkItem] = field(default_factory=list)
    reused: list[TrainingKey] = field(default_factory=list)
    failed: list[tuple[TrainingKey, str]] = field(default_factory=list)  # failed trainings left as they are

    @property
    def trainings(self) -> list[WorkItem]:
        return [w for w in self.work if w.mode == TRAIN]

    @property
    def evaluations_only(self) -> list[WorkItem]:
        return [w for w in self.work if w.mode == EVALUATE]

    def summary(self) -> str:
        """'2 to train, 3 to evaluate from stored weights (3 evaluations), 4 reused, 1 failed left as it is'."""
        parts = [f"{len(self.trainings)} to train"]
        if self.evaluations_only:
            n = sum(w.evaluations for w in self.evaluations_only)
            parts.append(f"{len(self.evaluations_only)} to evaluate from stored weights ({n} evaluation{'s' * (n != 1)})")
        parts.append(f"{len(self.reused)} reused")
        if self.failed:
            parts.append(f"{len(self.failed)} failed left as they are (retry with --resume)")
        return ", ".join(parts)


def read_cells(uri: str, experiment_id: str) -> dict[str, CellRecord]:
    """Every training cell MLflow holds for the experiment (deleted runs are not searched)."""
    mlflow_client = client(uri)
    where = store_location(uri)
    runs = retrying(lambda: search_all(mlflow_client, experiment_id, f"tags.`{TAG_CELL}` != ''"), "list the sweep's cells", where=where)
    out: dict[str, CellRecord] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):  # the newest run of a cell wins (there is one)
        content = retrying(lambda run=run: load_evaluations(mlflow_client, run), "read a run's evaluation rows", where=where)
        rows = [EvalRow.from_dict(r) for r in content["rows"]] if content else []
        evaluated = frozenset((r.eval_digest, int(r.train_step), r.setting.label) for r in rows if r.train_step is not None)
        cell = run.data.tags[TAG_CELL]
        out[cell] = CellRecord(run.info.run_id, run.info.status, run.data.tags.get(TAG_ERROR), evaluated)
    return out


def plan_pass(
    config: SweepConfig, plan: SweepPlan, cells: dict[str, CellRecord], storage: str, retry_failed: bool,
    exclude: frozenset[str] = frozenset(),
) -> PassPlan:  # fmt: skip
    """The work the file's cells still need. Failed trainings are retried only with `retry_failed` (and not
    those in `exclude`: a restored pass already retried them)."""
    digest = eval_digest(config)
    labels = [s.label for s in plan.settings]
    out = PassPlan()
    for key in plan.trainings:
        cell = training_cell(config, key)
        record = cells.get(cell)
        if record is None:
            out.work.append(WorkItem(key, cell, TRAIN, "new"))
            continue
        if record.status == "FAILED":
            if retry_failed and cell not in exclude:
                out.work.append(WorkItem(key, cell, TRAIN, f"retry: {record.error or 'it failed'}"))
            else:
                out.failed.append((key, record.error or "it failed"))
            continue
        if not record.trained:
            out.work.append(WorkItem(key, cell, TRAIN, f"its run was left {record.status}"))
            continue
        missing = [(step, tuple(l for l in labels if (digest, step, l) not in record.evaluated)) for step in plan.eval_steps]
        missing = [(step, todo) for step, todo in missing if todo]
        if not missing:
            out.reused.append(key)
            continue
        folder = cell_dir(storage, cell)
        unstored = [step for step, _ in missing if not has_complete(step_dir(folder, step))]
        if unstored:
            out.work.append(WorkItem(key, cell, TRAIN, f"no stored weights of step {unstored[0]} to evaluate"))
        else:
            out.work.append(WorkItem(key, cell, EVALUATE, "new evaluations", tuple(missing)))
    return out


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
    from orchestrator.evaluation_runs import TAG_EVALUATION, TAG_PARENT

    mlflow_client = client(uri)
    where = store_location(uri)
    current_cells = {training_cell(config, key) for key in plan.trainings}
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
    return changed


def drop_runs(uri: str, experiment_id: str, cells: list[str]) -> int:
    """Delete (MLflow's soft delete: restorable, hidden from searches) every run of these cells and their
    evaluation runs, before the cells are trained again from step 0: a new training never mixes into an old
    run's rows, params or loss curve. Returns how many runs were deleted."""
    from orchestrator.evaluation_runs import TAG_PARENT

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
