"""What a trial records, torch-free: evaluation rows, the trial's record file, and how MLflow mirrors them.

The driver never imports PyTorch, yet it must be able to finish the record of a trial whose worker died
(killed, out of memory, interrupted): so a checkpoint keeps its rows and loss curve in `record.json`, plain
JSON beside the tensors of `state.pt`, and everything that turns rows into MLflow params and metrics
lives here, where both the trial and the driver can use it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.plan import EvalSetting, TrainingKey

if TYPE_CHECKING:
    from orchestrator.config import SweepConfig

RECORD_FILE = "record.json"
#: Totals every row carries (the trial's, not the evaluation's), zero when the trial never trained.
ZERO_TOTALS: dict[str, Any] = {"train_steps": 0, "train_seconds": 0.0, "compute_seconds": 0.0}


def eval_row(setting: EvalSetting, step: int, **values: Any) -> dict[str, Any]:
    """One evaluation's row with every field present (NaN / None where it was not measured)."""
    base: dict[str, Any] = {
        "train_step": step,
        "solver": setting.solver,
        "tol": setting.tol,
        "nfe_budget": setting.nfe_budget,
        "nfe": None,
        "nll": math.nan,
        "nll_unit": None,
        "nll_nfe": None,
        "dequant_draws": None,
        "sample_metric": math.nan,
        "sample_metric_name": None,
        "ode_error": math.nan,
        "eval_seconds": 0.0,
        "status": "ok",
        "error": None,
    }
    base.update(values)
    return base


def failed_rows(settings: list[EvalSetting], steps: list[int], reason: str) -> list[dict[str, Any]]:
    """Rows recording that these evaluations could not run, with why."""
    return [eval_row(s, step, status="failed", error=reason) for step in steps for s in settings]


def complete_rows(
    rows: list[dict[str, Any]], settings: list[EvalSetting], eval_steps: list[int], reason: str | None
) -> list[dict[str, Any]]:
    """The rows a trial ends with: those it evaluated, plus a failed row (with `reason`) for every evaluation
    step it never reached, so that every planned evaluation has exactly one row."""
    if reason is None:
        return list(rows)
    done = {int(r["train_step"]) for r in rows}
    return list(rows) + failed_rows(settings, [s for s in eval_steps if s not in done], reason)


def setting_of(row: dict[str, Any]) -> EvalSetting:
    return EvalSetting(row["solver"], row["tol"], row["nfe_budget"])


def metrics_of(rows: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Per training step, MLflow metrics named `<quantity>/<solver setting>`."""
    out: dict[int, dict[str, float]] = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        label = setting_of(row).label
        step = out.setdefault(int(row["train_step"]), {})
        step[f"nfe/{label}"] = row["nfe"]
        step[f"ode_error/{label}"] = row["ode_error"]
        draws = row.get("dequant_draws")
        step[f"nll/{label}" + (f"_k{draws}" if draws is not None else "")] = row["nll"]
        if row["sample_metric_name"]:
            step[f"{row['sample_metric_name']}/{label}"] = row["sample_metric"]
    return out


def trial_params(config: SweepConfig, key: TrainingKey) -> dict[str, Any]:
    """The MLflow params of a run: identical names in every run so the compare view lines up. Values that
    the sweep file took from the environment are logged as written (`${VAR}`), never expanded."""
    params: dict[str, Any] = {**key.as_dict(), "sweep": config.name, "dataset": config.dataset.name}
    params.update({f"dataset.{k}": v for k, v in config.dataset.options.items()})
    params.update({f"model.{k}": v for k, v in config.model.model_dump().items()})
    params.update({f"train.{k}": v for k, v in config.train.model_dump().items()})
    params.update({f"eval.{k}": v for k, v in config.eval.model_dump().items()})
    params.update(config.written_as)
    return params


def trial_summary(config: SweepConfig, key: TrainingKey, node_id: str | None, started_at: float | None) -> dict[str, Any]:
    """The columns every row of a trial shares (evaluations.json's `summary`)."""
    return {
        "sweep": config.name, "trial_id": key.trial_id, "dataset": config.dataset.name, "model": config.model.kind,
        **key.as_dict(), "node_id": node_id, "resumed_from_step": 0, "trial_started_at": started_at,
    }  # fmt: skip


def totals_of(record: dict[str, Any]) -> dict[str, Any]:
    """The trial-wide totals every row carries, from a checkpoint's record."""
    train, evaluation = float(record.get("train_seconds", 0.0)), float(record.get("eval_seconds", 0.0))
    return {"train_steps": int(record.get("step", 0)), "train_seconds": train, "compute_seconds": train + evaluation}


def write_record(directory: str | Path, record: dict[str, Any]) -> Path:
    """Write the record atomically: a checkpoint is either without it or with all of it."""
    path = Path(directory) / RECORD_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, default=json_default))
    os.replace(tmp, path)
    return path


def read_record(directory: str | Path) -> dict[str, Any] | None:
    """The record of a checkpoint folder, or None where it has none (or it cannot be read)."""
    path = Path(directory) / RECORD_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def json_default(value: Any) -> Any:
    """json.dumps' fallback for numpy / torch scalars in rows."""
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")
