"""A validated sweep expanded into trainings and the evaluation settings each trained model gets.

Training axes (path, objective, coupling, seed) decide what is trained; solver axes (solver, tol,
nfe) only decide how a trained checkpoint is evaluated, so they never multiply the trainings.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from fm_core.names import ADAPTIVE_SOLVERS, FIXED_STAGES
from fm_core.objectives import path_objective_problem, time_sampling_problem
from fm_core.solvers import SolverSetting
from orchestrator.schema import SweepConfig

@dataclass(frozen=True, order=True)
class TrainingKey:
    """One training configuration of a sweep; its id names the Tune trial and the MLflow run. `train` holds
    the values of the grid's training-option axes (`grid.train`), as (option, JSON text) pairs."""

    path: str
    objective: str
    coupling: str
    seed: int
    train: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):  # from as_dict() / JSON: {option: value}
            object.__setattr__(self, "train", tuple((k, _json(v)) for k, v in self.train.items()))
        else:
            object.__setattr__(self, "train", tuple((str(k), str(v)) for k, v in self.train))

    @property
    def overrides(self) -> dict[str, Any]:
        """The training options this key sets, with their values."""
        return {name: json.loads(text) for name, text in self.train}

    @property
    def axes_label(self) -> str | None:
        """`lr=0.001 ema_decay=0.999` (None without training-option axes): the rows' and tables' name of it."""
        return " ".join(f"{name}={_readable(value)}" for name, value in self.overrides.items()) or None

    @property
    def trial_id(self) -> str:
        base = f"{self.path}-{self.objective}-{self.coupling}-s{self.seed}"
        return base + "".join(f"-{name}_{_slug(value)}" for name, value in self.overrides.items())

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {k: v for k, v in asdict(self).items() if k != "train"}
        return {**out, "train": self.overrides} if self.train else out


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _readable(value: Any) -> str:
    """A training option's value as the tables show it: `logit_normal(loc=0.5)` for a time sampling."""
    if isinstance(value, dict):
        kind = value.get("kind") or "default"
        options = ", ".join(f"{k}={v}" for k, v in value.items() if k != "kind" and v is not None)
        return f"{kind}({options})" if options else str(kind)
    return "none" if value is None else str(value)


def _slug(value: Any) -> str:
    """The value in a trial id (folder names): letters, digits, '.', '_' and '-' only."""
    text = _readable(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def train_run_name(trial_id: str, cell: str, pass_name: str) -> str:
    """The Ray Train run of a TorchTrainer trial (its checkpoints under <storage>/train/): the same name on a
    retry of the trial within its pass resumes it; another cell never does, and a later pass continues from
    its checkpoints only through `WorkItem.resume_from` (orchestrator.resume_points)."""
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
    """Every evaluation setting of the grid: adaptive x tol, fixed-step x nfe, each x guidance scale."""
    out: list[SolverSetting] = []
    for solver in config.grid.solver:
        if solver in ADAPTIVE_SOLVERS:
            out += [SolverSetting(solver, tol=t) for t in config.grid.tol]
        elif solver in FIXED_STAGES:
            out += [SolverSetting(solver, nfe_budget=n) for n in config.grid.nfe]
    # A class-conditional model samples with guidance: at the grid's scales, else at 1 (its conditional field).
    scales = config.grid.cfg_scale or ((1.0,) if config.train.label_dropout is not None else (None,))
    return [setting.with_guidance(scale) for setting in out for scale in scales]


def pair_problem(path: str, objective: str, time_kind: str | None = None) -> str | None:
    """Why the objective cannot train on the path with these times (fm_core's capabilities), or None."""
    return path_objective_problem(path, objective) or time_sampling_problem(path, objective, time_kind)


def is_valid_pair(path: str, objective: str, time_kind: str | None = None) -> bool:
    return pair_problem(path, objective, time_kind) is None


def method_rows(config: SweepConfig) -> list[tuple[str, str, str | None]]:
    """(path, objective, coupling or None = every grid coupling) rows, before the validity filter."""
    if config.grid.pairs is not None:
        return [(r[0], r[1], r[2] if len(r) == 3 else None) for r in config.grid.pairs]
    return [(p, o, None) for p in config.grid.path for o in config.grid.objective]


def path_objective_pairs(config: SweepConfig) -> list[tuple[str, str]]:
    """The (path, objective) pairs to train, before the validity filter."""
    return [(p, o) for p, o, _ in method_rows(config)]


def train_variants(config: SweepConfig, only: str | None = None) -> list[tuple[tuple[str, str], ...]]:
    """Every combination of the grid's training-option values, as TrainingKey.train tuples ([()] without
    `grid.train`); `only`: of that one axis."""
    axes = {k: v for k, v in (config.grid.train or {}).items() if only is None or k == only}
    texts = [[(name, _json(value)) for value in values] for name, values in axes.items()]
    return [tuple(combo) for combo in itertools.product(*texts)]


def time_kind(config: SweepConfig, variant: tuple[tuple[str, str], ...]) -> str | None:
    """The time sampling a training-option variant trains with (its own axis value, else the file's)."""
    for name, text in variant:
        if name == "time_sampling":
            return (json.loads(text) or {}).get("kind")
    return config.train.time_sampling.kind


def _row_couplings(config: SweepConfig, coupling: str | None) -> tuple[str, ...]:
    """A row's own coupling, else every coupling of the grid."""
    return (coupling,) if coupling is not None else config.grid.coupling


def _trained(config: SweepConfig) -> list[tuple[str, str, str | None, tuple[tuple[str, str], ...]]]:
    """(path, objective, coupling or None, training-option variant) rows that can train, in the file's order:
    a variant's time sampling must fit the objective and path too (fm_core's capabilities)."""
    out = []
    for path, objective, coupling in method_rows(config):
        for variant in train_variants(config):
            if is_valid_pair(path, objective, time_kind(config, variant)):
                out.append((path, objective, coupling, variant))
    return out


def _eval_steps(config: SweepConfig) -> list[int]:
    return sorted(set(config.eval.at_steps) | {config.train.steps})


def count_trainings(config: SweepConfig) -> int:
    """len(plan_sweep(config).trainings) from the axes' lengths alone (validation keeps rows distinct); the
    training-option variants are counted, not listed, except for the time sampling, which decides validity."""
    other = 1
    for name, values in (config.grid.train or {}).items():
        other *= 1 if name == "time_sampling" else len(values)
    kinds = [time_kind(config, variant) for variant in train_variants(config, only="time_sampling")]
    rows = sum(
        len(_row_couplings(config, c)) * sum(1 for kind in kinds if is_valid_pair(p, o, kind))
        for p, o, c in method_rows(config)
    )  # fmt: skip
    return rows * other * len(config.grid.seed)


def count_evaluations(config: SweepConfig) -> int:
    """plan_sweep(config).num_evaluations without building the trainings."""
    return count_trainings(config) * len(eval_settings(config)) * len(_eval_steps(config))


def plan_sweep(config: SweepConfig) -> SweepPlan:
    """Expand the grid, in time linear in its size; invalid (path, objective) pairs were rejected by
    validation or are skipped here."""
    trained = _trained(config)
    valid = {(p, o) for p, o, _, _ in trained}
    skipped = [(p, o) for p, o, _ in method_rows(config) if (p, o) not in valid]
    trainings = dict.fromkeys(  # ordered and free of repeats, at a hash per key
        TrainingKey(path, objective, c, seed, variant)
        for path, objective, coupling, variant in trained
        for c, seed in itertools.product(_row_couplings(config, coupling), config.grid.seed)
    )
    settings = eval_settings(config)
    shared = [label for label, n in Counter(s.label for s in settings).items() if n > 1]
    if shared:  # one metric name would hold two settings' values
        raise ValueError(f"evaluation settings share a label: {shared}")
    return SweepPlan(trainings=list(trainings), skipped=skipped, settings=settings, eval_steps=_eval_steps(config))
