"""The work a pass does: which trainings and evaluations of a sweep file exist already, and what is missing.

What exists is in MLflow (each training run carries its cell key, `fmx.cell`, and its rows) plus the weights
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
from orchestrator.mlflow_retry import retrying
from orchestrator.tracking import client, load_evaluations, store_location
from orchestrator.tags import TAG_CELL, TAG_ERROR, search_all  # fmt: skip

TRAIN, EVALUATE = "train", "evaluate"


@dataclass(frozen=True)
class CellRecord:
    """What MLflow holds of one training cell."""

    run_id: str
    status: str  # the MLflow run's status: FINISHED, FAILED, RUNNING, ...
    error: str | None
    evaluated: frozenset[tuple[str | None, int, str]]  # (eval digest, step, setting label) of every row
    #: Those of rows that failed (a cut-off snapshot, a non-finite solve): `--resume` evaluates them again.
    failed_evaluations: frozenset[tuple[str | None, int, str]] = frozenset()

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
    #: TRAIN: the checkpoint folder of an earlier pass it continues from (orchestrator.resume_points); None: step 0
    resume_from: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key.as_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkItem:
        evaluate = tuple((int(step), tuple(labels)) for step, labels in data.get("evaluate", ()))
        resume_from = data.get("resume_from")
        if resume_from is not None and not isinstance(resume_from, str):
            raise TypeError("resume_from is not a path")
        return cls(TrainingKey(**data["key"]), data["cell"], data["mode"], data["why"], evaluate, resume_from)

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
        failed = frozenset((r.eval_digest, int(r.train_step), r.setting.label) for r in rows if r.train_step is not None and not r.ok)
        cell = run.data.tags[TAG_CELL]
        out[cell] = CellRecord(run.info.run_id, run.info.status, run.data.tags.get(TAG_ERROR), evaluated, failed)
    return out


def plan_pass(config: SweepConfig, plan: SweepPlan, cells: dict[str, CellRecord], storage: str, retry_failed: bool) -> PassPlan:
    """The work the file's cells still need. Failed trainings and failed evaluations are retried only with
    `retry_failed`."""
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
            if retry_failed:
                out.work.append(WorkItem(key, cell, TRAIN, f"retry: {record.error or 'it failed'}"))
            else:
                out.failed.append((key, record.error or "it failed"))
            continue
        if not record.trained:
            out.work.append(WorkItem(key, cell, TRAIN, f"its run was left {record.status}"))
            continue
        done = record.evaluated - record.failed_evaluations if retry_failed else record.evaluated
        missing = [(step, tuple(l for l in labels if (digest, step, l) not in done)) for step in plan.eval_steps]
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
