"""A validated sweep expanded into trainings and the evaluation settings each trained model gets.

Training axes (path, objective, coupling, seed) decide what is trained; solver axes (solver, tol,
nfe) only decide how a trained checkpoint is evaluated, so they never multiply the trainings.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from fm_core.names import ADAPTIVE_SOLVERS, FIXED_STAGES
from orchestrator.config import SweepConfig, is_valid_pair

if TYPE_CHECKING:
    from fm_core.sampling import SolverSpec


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


@dataclass(frozen=True)
class EvalSetting:
    """One solver setting: a fixed-step method at an NFE budget or an adaptive one at a tolerance."""

    solver: str
    tol: float | None = None
    nfe_budget: int | None = None

    def spec(self) -> SolverSpec:
        from fm_core.sampling import SolverSpec  # PyTorch is needed here, not to plan a sweep

        if self.tol is not None:
            return SolverSpec.adaptive(self.solver, self.tol)
        return SolverSpec(self.solver, nfe=self.nfe_budget)

    @property
    def label(self) -> str:
        """A metric-name-safe label such as `dopri5_tol1e-05` or `euler_nfe8`."""
        return f"{self.solver}_tol{self.tol:.0e}" if self.tol is not None else f"{self.solver}_nfe{self.nfe_budget}"


@dataclass(frozen=True)
class SweepPlan:
    trainings: list[TrainingKey]
    skipped: list[tuple[str, str]]
    settings: list[EvalSetting]
    eval_steps: list[int]

    @property
    def num_evaluations(self) -> int:
        return len(self.trainings) * len(self.settings) * len(self.eval_steps)


def eval_settings(config: SweepConfig) -> list[EvalSetting]:
    """Every solver setting of the grid: adaptive x tol, fixed-step x nfe."""
    out: list[EvalSetting] = []
    for solver in config.grid.solver:
        if solver in ADAPTIVE_SOLVERS:
            out += [EvalSetting(solver, tol=t) for t in config.grid.tol]
        elif solver in FIXED_STAGES:
            out += [EvalSetting(solver, nfe_budget=n) for n in config.grid.nfe]
    return out


def plan_sweep(config: SweepConfig) -> SweepPlan:
    """Expand the grid; invalid (path, objective) pairs were rejected by validation or are skipped here."""
    rows = config.method_rows()
    skipped = [(p, o) for p, o, _ in rows if not is_valid_pair(p, o)]
    trainings: list[TrainingKey] = []
    for path, objective, coupling in rows:
        if not is_valid_pair(path, objective):
            continue
        couplings = [coupling] if coupling is not None else list(config.grid.coupling)
        for c, seed in itertools.product(couplings, config.grid.seed):
            key = TrainingKey(path, objective, c, seed)
            if key not in trainings:
                trainings.append(key)
    steps = sorted(set(config.eval.at_steps) | {config.train.steps})
    return SweepPlan(trainings=trainings, skipped=skipped, settings=eval_settings(config), eval_steps=steps)
