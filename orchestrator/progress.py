"""Live sweep progress in the terminal: trials done / running / failed and each trial's latest numbers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.markup import escape

from orchestrator.plan import TrainingKey


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


def last_line(text: str) -> str | None:
    """The last non-empty line of an error's text: a remote traceback ends with its cause."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


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
        """Count from Tune's own trial states too: after --resume the trials finished before the
        interruption never report again, yet belong in 'done'."""
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
