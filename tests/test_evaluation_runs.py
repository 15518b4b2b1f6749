"""The evaluation child runs in a real MLflow store: nested under their training run, and timed as the
evaluation was (the UI's Duration column), although they are written after it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mlflow import MlflowClient

from fm_core.solvers import SolverSetting
from orchestrator.evaluation_runs import log_evaluation_runs
from orchestrator.rows import EvalRow
from orchestrator.tags import TAG_PARENT

T = TypeVar("T")


@dataclass
class _Parent:
    """A training run as log_evaluation_runs needs it, on a real store."""

    client: Any
    run_id: str
    experiment_id: str
    tags: dict[str, str] = field(default_factory=dict)

    def retrying(self, call: Callable[[], T], what: str) -> T:
        return call()


def _row(setting: SolverSetting, seconds: float, **values: Any) -> EvalRow:
    return EvalRow.of(setting, 100, trial_id="ot-fm-independent-s0", path="ot", objective="fm", coupling="independent",
                      seed=0, nfe=8, nll=2.0, nll_unit="nats", eval_seconds=seconds, **values)  # fmt: skip


def test_an_evaluation_run_lasts_as_long_as_its_evaluation_and_a_rerun_adds_nothing(tmp_path: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("timed", artifact_location=str(tmp_path / "artifacts"))
    parent = _Parent(client, client.create_run(experiment).info.run_id, experiment)
    rows = [_row(SolverSetting("euler", nfe_budget=8), 12.5),
            _row(SolverSetting("dopri5", tol=1e-5), 0.0, status="failed", error="diverged")]  # fmt: skip
    ids = log_evaluation_runs(parent, rows)
    runs = {r.info.run_id: r for r in client.search_runs([experiment], f"tags.`{TAG_PARENT}` = '{parent.run_id}'")}
    assert set(runs) == set(ids.values()) and len(runs) == 2
    timed = runs[ids[rows[0].evaluation_key]].info
    assert timed.status == "FINISHED" and timed.end_time - timed.start_time == 12_500
    failed = runs[ids[rows[1].evaluation_key]].info
    assert failed.status == "FAILED" and failed.end_time - failed.start_time == 0
    assert log_evaluation_runs(parent, rows) == ids  # complete already: found again, not doubled
    assert len(client.search_runs([experiment], f"tags.`{TAG_PARENT}` = '{parent.run_id}'")) == 2
