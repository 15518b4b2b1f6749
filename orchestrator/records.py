"""What a trial records, torch-free: evaluation rows, the trial's record file, and how MLflow mirrors them.

The driver never imports PyTorch, yet it must be able to finish the record of a trial whose worker died
(killed, out of memory, interrupted): so a checkpoint keeps its rows and loss curve in `record.json`, plain
JSON beside the tensors of `state.pt`, and everything that turns rows into MLflow params and metrics
lives here, where both the trial and the driver can use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fm_core.solvers import SolverSetting
from orchestrator.cells import eval_digest, training_cell
from orchestrator.plan import TrainingKey
from orchestrator.rows import EvalRow
from orchestrator.schema import SweepConfig
from orchestrator.safe_files import read_small

RECORD_FILE = "record.json"
#: The tensors of a checkpoint (model, optimizer, EMA, ...), beside its record; loaded with weights_only=True.
STATE_FILE = "state.pt"


def failed_rows(settings: list[SolverSetting], steps: list[int], reason: str) -> list[EvalRow]:
    """Rows recording that these evaluations could not run, with why."""
    return [EvalRow.of(s, step, status="failed", error=reason) for step in steps for s in settings]


def complete_rows(rows: list[EvalRow], settings: list[SolverSetting], eval_steps: list[int], reason: str | None) -> list[EvalRow]:
    """The rows a trial ends with: those it evaluated, plus a failed row (with `reason`) for every evaluation
    step it never reached, so that every planned evaluation has exactly one row."""
    if reason is None:
        return list(rows)
    done = {int(r.train_step) for r in rows if r.train_step is not None}
    return list(rows) + failed_rows(settings, [s for s in eval_steps if s not in done], reason)


def trial_params(config: SweepConfig, key: TrainingKey) -> dict[str, Any]:
    """The MLflow params of a training (parent) run: the training configuration, only fields that apply to its
    model kind, identical names in every run of the sweep. Values that the sweep file took from the environment
    are logged as written (`${VAR}`), never expanded."""
    config = config.for_training(key)
    params: dict[str, Any] = {k: v for k, v in key.as_dict().items() if k != "train"}
    params.update({"sweep": config.name, "dataset": config.dataset.name, "train_axes": key.axes_label or "none"})
    params.update({f"dataset.{k}": v for k, v in config.dataset.options.items()})
    params.update({f"model.{k}": v for k, v in config.model.applied.items()})
    params.update({f"train.{k}": v for k, v in config.train.model_dump().items()})
    params.update({"train.worker_batch": config.train.worker_batch, "train.micro_batch": config.train.micro_batch})
    evaluation = config.eval.model_dump()
    if evaluation["fid"] is None:
        del evaluation["fid"]  # no FID: no param saying so, as before it existed
    params.update(_flat("eval", evaluation))
    params.update({k: v for k, v in config.written_as.items() if k in params or k == "storage_path"})
    return params


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """Nested settings as dotted params: {eval.likelihood.solver: dopri5, eval.fid.reference.split: train}."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(_flat(f"{prefix}.{key}", value) if isinstance(value, dict) else {f"{prefix}.{key}": value})
    return out


def trial_identity(config: SweepConfig, key: TrainingKey) -> dict[str, Any]:
    """What was trained, as every row of the trial says it (`weights`: the EMA when the sweep keeps one)."""
    config = config.for_training(key)
    weights = "ema" if config.train.ema_decay is not None else "model"
    method = {k: v for k, v in key.as_dict().items() if k != "train"}
    return {"sweep": config.name, "trial_id": key.trial_id, "cell": training_cell(config, key), "eval_digest": eval_digest(config),
            "dataset": config.dataset.name, "model": config.model.kind, "weights": weights, "train_axes": key.axes_label,
            **method}  # fmt: skip


def trial_summary(config: SweepConfig, key: TrainingKey, node_id: str | None, started_at: float | None) -> dict[str, Any]:
    """The fields every row of a trial shares (row.replace(**summary))."""
    train = config.for_training(key).train
    scale = {"global_batch": train.batch_size, "worker_batch": train.worker_batch, "world_size": train.num_workers,
             "grad_accum": train.grad_accum, "precision": train.precision}  # fmt: skip
    return {**trial_identity(config, key), **scale, "node_id": node_id, "resumed_from_step": 0, "trial_started_at": started_at}


def totals_of(record: dict[str, Any]) -> dict[str, Any]:
    """The trial-wide totals every row carries, from a checkpoint's record."""
    train, evaluation = float(record.get("train_seconds", 0.0)), float(record.get("eval_seconds", 0.0))
    totals = {"train_steps": int(record.get("step", 0)), "train_seconds": train, "compute_seconds": train + evaluation}
    return {**totals, **({"device": record["device"]} if record.get("device") else {})}


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
        raw = read_small(path)
        return None if raw is None else json.loads(raw.decode())
    except (OSError, ValueError):  # UnsafeFile too: a link or a FIFO is no record
        return None


def json_default(value: Any) -> Any:
    """json.dumps' fallback for numpy / torch scalars in rows."""
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")

