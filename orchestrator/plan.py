"""A validated sweep expanded into trainings and the evaluation settings each trained model gets.

Training axes (path, objective, coupling, seed) decide what is trained; solver axes (solver, tol,
nfe) only decide how a trained checkpoint is evaluated, so they never multiply the trainings.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import asdict, dataclass

from fm_core.names import ADAPTIVE_SOLVERS, FIXED_STAGES
from fm_core.solvers import SolverSetting
from orchestrator.config import SweepConfig, is_valid_pair

@dataclass(frozen=True, order=True)
class TrainingKey:
    """One training configuration of a sweep; its id names the Tune trial and the MLflow run."""

    path: str
    objective: str
    coupling: str
    seed: int

    @property
    def trial_id(self) -> str:
        return f"{self.path}-{self.objective}-{self.coupling}-s{self.seed}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def train_run_name(trial_id: str, cell: str, pass_name: str) -> str:
    """The Ray Train run of a TorchTrainer trial (its checkpoints under <storage>/train/): the same name on a
    restore of the pass resumes it; another cell, or a later pass training the cell afresh, never does."""
    return f"train-{trial_id}-{cell[:8]}-{pass_name}"


@dataclass(frozen=True)
class SweepPlan:
    trainings: list[TrainingKey]
    skipped: list[tuple[str, str]]
    settings: list[SolverSetting]
    eval_steps: list[int]

    @property
    def num_evaluations(self) -> int:
        return len(self.trainings) * len(self.settings) * len(self.eval_steps)


def eval_settings(config: SweepConfig) -> list[SolverSetting]:
    """Every solver setting of the grid: adaptive x tol, fixed-step x nfe."""
    out: list[SolverSetting] = []
    for solver in config.grid.solver:
        if solver in ADAPTIVE_SOLVERS:
            out += [SolverSetting(solver, tol=t) for t in config.grid.tol]
        elif solver in FIXED_STAGES:
            out += [SolverSetting(solver, nfe_budget=n) for n in config.grid.nfe]
    return out


def _row_couplings(config: SweepConfig, coupling: str | None) -> tuple[str, ...]:
    """A row's own coupling, else every coupling of the grid."""
    return (coupling,) if coupling is not None else config.grid.coupling


def _trained_rows(config: SweepConfig) -> list[tuple[str, str, str | None]]:
    return [row for row in config.method_rows() if is_valid_pair(row[0], row[1])]


def _eval_steps(config: SweepConfig) -> list[int]:
    return sorted(set(config.eval.at_steps) | {config.train.steps})


def count_trainings(config: SweepConfig) -> int:
    """len(plan_sweep(config).trainings) from the axes' lengths alone (validation keeps rows distinct)."""
    return sum(len(_row_couplings(config, c)) for _, _, c in _trained_rows(config)) * len(config.grid.seed)


def count_evaluations(config: SweepConfig) -> int:
    """plan_sweep(config).num_evaluations without building the trainings."""
    return count_trainings(config) * len(eval_settings(config)) * len(_eval_steps(config))


def plan_sweep(config: SweepConfig) -> SweepPlan:
    """Expand the grid, in time linear in its size; invalid (path, objective) pairs were rejected by
    validation or are skipped here."""
    skipped = [(p, o) for p, o, _ in config.method_rows() if not is_valid_pair(p, o)]
    trainings = dict.fromkeys(  # ordered and free of repeats, at a hash per key
        TrainingKey(path, objective, c, seed)
        for path, objective, coupling in _trained_rows(config)
        for c, seed in itertools.product(_row_couplings(config, coupling), config.grid.seed)
    )
    settings = eval_settings(config)
    shared = [label for label, n in Counter(s.label for s in settings).items() if n > 1]
    if shared:  # one metric name would hold two settings' values
        raise ValueError(f"evaluation settings share a label: {shared}")
    return SweepPlan(trainings=list(trainings), skipped=skipped, settings=settings, eval_steps=_eval_steps(config))
