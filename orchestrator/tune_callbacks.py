"""The Ray Tune callbacks of a sweep's pass: live progress lines and which trials really ended. The one driver
module that imports Ray Tune when it is imported (its callbacks subclass Tune's): `orchestrator.api` loads the driver only when a sweep runs, so validation and --dry-run never pay it.
Tune pickles these callbacks with its experiment state, so they stay plain, module-level classes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.markup import escape

from orchestrator.errors import last_line
from orchestrator.plan import TrainingKey
from orchestrator.reconcile import TrialState


def _process_start() -> float:
    """When this command started (epoch seconds), so elapsed times include its own start-up."""
    import psutil

    return psutil.Process().create_time()


def _evaluation_line(result: dict[str, Any]) -> str:
    """'step 2000 eval 3/33 rk4_nfe8: NFE 8 · sliced_w2 0.231 · NLL 3.82' from an evaluation progress result."""
    parts = [f"step {int(result['step'])} eval {result['evaluated']}/{result['evaluations']} {result['setting']}:"]
    if result.get("error"):
        return " ".join(parts) + f" [red]failed: {escape(str(result['error']))}[/]"
    if result.get("nfe") is not None:
        parts.append(f"NFE {int(result['nfe'])}")
    if result.get("sample_metric_name") and result.get("sample_metric") is not None:
        parts.append(f"· {result['sample_metric_name']} {result['sample_metric']:.4g}")
    if result.get("nll") is not None and result["nll"] == result["nll"]:
        parts.append(f"· NLL {result['nll']:.4g}")
    return " ".join(parts)


def _error_of(trial: Any) -> str:
    """The cause of a failed trial, from the error file Tune wrote for it."""
    try:
        return last_line(Path(trial.error_file).read_text()) or "see Tune's error file"
    except (OSError, TypeError):
        return "see Tune's error file"


class SweepProgress(Callback):
    """A Tune callback that prints one line per event, prefixed with the sweep's counts."""

    def __init__(self, total: int, total_steps: int, console: Console | None = None, t0: float | None = None) -> None:
        self.total, self.total_steps = total, total_steps
        self.t0 = _process_start() if t0 is None else t0
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.running: set[str] = set()
        self.done: set[str] = set()
        self.failed: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; a console holds locks.
        state = dict(self.__dict__)
        state["console"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.console = Console(stderr=True, soft_wrap=True)

    @staticmethod
    def _name(trial: Any) -> str:
        key = (trial.config or {}).get("key") or {}
        return TrainingKey(**key).trial_id if key else str(trial)

    def _status(self) -> str:
        return (
            f"\\[t+{time.time() - self.t0:.1f}s] [bold]{len(self.done)}/{self.total} done[/] · {len(self.running)} running · "
            f"[{'red' if self.failed else 'dim'}]{len(self.failed)} failed[/]"
        )

    def _sync(self, trials: list) -> None:
        """Count from Tune's own trial states too, so that no end event missed leaves the counts behind."""
        for other in trials:
            status = getattr(other, "status", None)
            if status == "TERMINATED":
                self.done.add(self._name(other))
            elif status == "ERROR":
                self.done.add(self._name(other))
                self.failed.add(self._name(other))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._sync(trials)
        self.running.add(self._name(trial))
        self.console.print(f"{self._status()}  ▶ {self._name(trial)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get("done"):
            return
        step, loss = result.get("step"), result.get("loss")
        if result.get("evaluated") is not None:
            self.console.print(f"{self._status()}  · {self._name(trial)} {_evaluation_line(result)}")
        elif step is not None and loss is not None:
            self.console.print(f"{self._status()}  · {self._name(trial)} step {int(step)}/{self.total_steps} loss {loss:.4g}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        name = self._name(trial)
        self.running.discard(name)
        self.done.add(name)
        self.console.print(f"{self._status()}  [green]✓[/] {name}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        name = self._name(trial)
        self.running.discard(name)
        self.done.add(name)
        self.failed.add(name)
        self.console.print(f"{self._status()}  [red]✗[/] {name} failed: {escape(_error_of(trial))}", highlight=False)


@dataclass
class _RunLedger:
    """What this driver saw of its Tune run: the live Trial objects and the trials that ended during it."""

    trials: list[Any]
    ended: dict[str, str] = field(default_factory=dict)  # trial id -> TERMINATED / ERROR


_LEDGERS: dict[str, _RunLedger] = {}  # by Tune experiment path, filled by TrialLedger


def _trial_id(trial: Any) -> str:
    return TrainingKey(**(trial.config or {})["key"]).trial_id


class TrialLedger(Callback):
    """Tells a trial that ended from one that was stopped. Tune's saved state can lag (a trial whose worker
    was killed was seen still RUNNING there), and on Ctrl-C Tune marks the trials it stops TERMINATED in
    memory: only the end events say which trials really completed or failed."""

    def __init__(self, tune_path: str) -> None:
        self.tune_path = tune_path

    def _ledger(self, trials: list) -> _RunLedger:
        ledger = _LEDGERS.setdefault(self.tune_path, _RunLedger(trials))
        ledger.trials = trials
        return ledger

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._ledger(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ledger(trials).ended[_trial_id(trial)] = "TERMINATED"

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ledger(trials).ended[_trial_id(trial)] = "ERROR"


def tune_trial_states(tune_path: str) -> dict[str, TrialState]:
    """Every trial of the Tune run, by fmx trial id (also those that never reported), from what this driver
    saw where it ran the trials: a trial that did not end was interrupted. None where
    Tune stopped before its first step (never from Tune's saved state: pickles on untrusted storage)."""
    ledger = _LEDGERS.get(tune_path)
    if ledger is None:
        return {}
    states: dict[str, TrialState] = {}
    for trial in ledger.trials:
        trial_id = _trial_id(trial)
        status = ledger.ended.get(trial_id) or "INTERRUPTED"
        error = trial.get_error() if status == "ERROR" else None
        reason = (last_line(str(error)) or "the trial failed") if status == "ERROR" else None
        states[trial_id] = TrialState(status, reason, trial.checkpoint)
    return states
