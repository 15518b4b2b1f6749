"""A Ray Tune evaluation trial (from orchestrator.tune_entry): a trained cell's missing evaluations (new solver
settings, new evaluation settings), from the weights its training stored at each evaluation step: no retraining.
The new rows join the cell's run (one child run each, evaluations.json rewritten with old and new rows, a row
of the same evaluation replaced)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import ray.tune
import torch

from orchestrator.artifacts import keep, send_missing
from orchestrator.cell_store import get_dir, step_dir
from orchestrator.evaluation import Evaluator
from orchestrator.evaluation_runs import log_evaluation_runs
from orchestrator.model_state import ModelState, trial_device
from orchestrator.records import trial_identity
from orchestrator.rows import FIELD_NAMES, EvalRow, rows_from_dicts
from orchestrator.tracking import TrialRun
from orchestrator.training_loop import eval_progress, write_samples
from orchestrator.trial_setup import TrialSetup
from orchestrator.tune_training import failure_reason


def run(trial: TrialSetup, started_at: float, started: float) -> None:
    """Evaluate what `trial.item.evaluate` lists ((step, setting labels) pairs) and log the rows to the cell's
    run; `started_at` / `started` as for a training trial (unused: the run keeps its training's summary)."""
    config, item = trial.config, trial.item
    torch.set_num_threads(max(1, int(config.train.cpus_per_worker)))
    run = TrialRun(trial.tracking_uri, trial.experiment_id, config.name, item.key, {}, item.cell, mark_running=False)
    content = run.read_evaluations() or {"summary": {}, "rows": []}
    settings = {s.label: s for s in trial.settings}
    state = ModelState(config, item.key, device=trial_device(config))  # a use_gpu trial holds a GPU
    evaluator = Evaluator(state, trial.fid_cache)
    rows: list[EvalRow] = []
    error = None
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Path(tmp)
        try:
            for step, labels in item.evaluate:
                with tempfile.TemporaryDirectory() as local:
                    state.restore_weights(get_dir(step_dir(trial.snapshots, step), Path(local)))
                todo = [settings[label] for label in labels]
                found, samples = evaluator.evaluate(todo, lambda i, row, n=len(todo): ray.tune.report(eval_progress(i, n, row)))
                rows += found
                keep(write_samples(evaluator, found, samples, artifacts, suffix=f"_{trial.pass_name}"), trial.snapshots)
        except Exception as err:  # a lost or unreadable snapshot: the evaluations not reached are recorded failed
            error = failure_reason(err)
        done = {(r.train_step, r.setting.label) for r in rows}
        rows += [EvalRow.of(settings[label], step, **trial_identity(config, item.key), status="failed", error=error)
                 for step, labels in item.evaluate for label in labels if (step, label) not in done and error]  # fmt: skip
        summary = content.get("summary", {})
        shared = {k: v for k, v in summary.items() if k in FIELD_NAMES and k not in ("error", "eval_digest")}
        rows = [row.replace(**shared) for row in rows]
        log_evaluation_runs(run, rows)
        merged = {r.evaluation_key: r for r in rows_from_dicts(content.get("rows", []))}
        merged.update({r.evaluation_key: r for r in rows})
        run.log_evaluations(list(merged.values()), summary)
        send_missing(run, trial.snapshots)
    if error:
        raise RuntimeError(error)
    ray.tune.report({"done": 1.0, "evaluated": len(rows)})
