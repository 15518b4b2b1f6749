"""What `run_sweep` returns: the sweep's rows and where its tables are, what failed, was repaired or
interrupted, and the exit code that all of it means for the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.pass_work import PassPlan

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class SweepOutcome:
    runs: pd.DataFrame  # one row per evaluation (the columns of orchestrator.rows.EvalRow)
    runs_path: Path | None  # None where the tables were not written (see `not_written`)
    table_path: Path | None
    trainings: int
    failed_trials: int
    seconds: float
    unrecorded: dict[str, str]  # trial id -> why, for failed trials that never created their MLflow run
    interrupted: list[str]  # trials that had not finished when the driver was interrupted
    repaired: dict[str, str | None]  # trials whose record the driver wrote (trial -> reason)
    not_written: str | None = None  # why runs.parquet was left as it was
    pass_plan: PassPlan | None = None  # what the pass ran and reused
    file: str = "FILE"  # the sweep file, as `--resume` advice names it

    @property
    def failed_evaluations(self) -> int:
        return int((self.runs["status"] != "ok").sum()) if len(self.runs) else 0

    @property
    def exit_code(self) -> int:
        """130 if trials were interrupted (resumable), 1 if a trial never recorded anything (a broken install,
        say) or the tables could not be written safely, else 0 (failed trials are results, recorded as such)."""
        if self.interrupted:
            return 130
        return 1 if self.unrecorded or self.not_written else 0
