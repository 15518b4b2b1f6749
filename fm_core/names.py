"""The names fm_core understands, in a module that imports nothing heavy.

Sweep files are validated against these before anything starts, so `fmx validate` and every bad-input
error answer in well under a second instead of waiting for PyTorch to import. The modules that implement
each name import their list from here, so there is one source of truth.
"""

from __future__ import annotations

from fm_core.dataset_specs import DATASET_SPECS
from fm_core.paths import PATHS
from fm_core.time_sampling import TIME_SAMPLERS

#: The schedules of fm_core.paths (a new one is a class there, nothing here).
PATH_NAMES: tuple[str, ...] = tuple(PATHS)
OBJECTIVE_NAMES: tuple[str, ...] = ("fm", "sm", "scoreflow", "ddpm")
#: What each objective needs of a path, as the path classes' capabilities (fm_core.paths): the score
#: objectives learn a score (or noise), which defines an ODE only where alpha_t > 0; ScoreFlow also weights
#: its loss by the path's diffusion coefficient.
OBJECTIVE_NEEDS: dict[str, tuple[str, ...]] = {
    "fm": (), "sm": ("score_field",), "ddpm": ("score_field",), "scoreflow": ("score_field", "likelihood_weighting"),
}  # fmt: skip
SCORE_OBJECTIVES: tuple[str, ...] = tuple(o for o, needs in OBJECTIVE_NEEDS.items() if "score_field" in needs)
#: The distributions of training times (fm_core.time_sampling); an objective trains with its default unless
#: `train.time_sampling` names another. ScoreFlow *is* score matching under likelihood-weighted times.
TIME_SAMPLING_NAMES: tuple[str, ...] = tuple(TIME_SAMPLERS)
OBJECTIVE_TIMES: dict[str, str] = {"fm": "uniform", "sm": "uniform", "ddpm": "uniform", "scoreflow": "likelihood"}
_WHY = {
    "score_field": "alpha_t is 0 at its noise end, where a score defines no probability-flow field",
    "likelihood_weighting": "it has no diffusion coefficient to weight the score loss by likelihood",
}
COUPLING_NAMES: tuple[str, ...] = ("independent", "minibatch_ot")
#: Each dataset's options (its constructor's keyword arguments; fm_core.data checks they agree on import);
#: what each option accepts is in fm_core.dataset_specs.
DATASET_OPTIONS: dict[str, tuple[str, ...]] = {name: spec.option_names for name, spec in DATASET_SPECS.items()}
DATASET_NAMES: tuple[str, ...] = tuple(DATASET_OPTIONS)
#: Function evaluations per step of each fixed-grid solver in torchdiffeq 0.2.5.
FIXED_STAGES: dict[str, int] = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}
ADAPTIVE_SOLVERS: tuple[str, ...] = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
SOLVER_NAMES: tuple[str, ...] = tuple(FIXED_STAGES) + ADAPTIVE_SOLVERS
#: Training precisions (autocast dtype; fp16 adds a gradient scaler) and sampling precisions: fm_core.precision.
PRECISION_NAMES: tuple[str, ...] = ("fp32", "bf16", "fp16")


def paths_for(objective: str) -> tuple[str, ...]:
    """The paths an objective can train on."""
    return tuple(p for p, cls in PATHS.items() if all(getattr(cls, need) for need in OBJECTIVE_NEEDS[objective]))


def path_objective_problem(path: str, objective: str) -> str | None:
    """Why `objective` cannot train on `path` (None: it can), read from the path's capabilities."""
    missing = [need for need in OBJECTIVE_NEEDS[objective] if not getattr(PATHS[path], need)]
    if not missing:
        return None
    return f"objective '{objective}' cannot train on path '{path}': {_WHY[missing[0]]} (it can on {', '.join(paths_for(objective))})"


def time_sampling_of(objective: str, kind: str | None) -> str:
    """The time distribution an objective trains with: `kind`, else its own default."""
    return kind or OBJECTIVE_TIMES[objective]


def time_sampling_problem(path: str, objective: str, kind: str | None) -> str | None:
    """Why these training times do not fit the objective on this path (None: they do)."""
    chosen = time_sampling_of(objective, kind)
    if OBJECTIVE_TIMES[objective] == "likelihood" and chosen != "likelihood":
        return f"objective '{objective}' is score matching with likelihood-weighted times: for '{chosen}' times train 'sm'"
    if TIME_SAMPLERS[chosen].needs_likelihood_weighting:
        if objective not in SCORE_OBJECTIVES:
            return f"time sampling '{chosen}' weights a score loss; objective '{objective}' has none"
        if not PATHS[path].likelihood_weighting:
            return f"time sampling '{chosen}' needs a diffusion coefficient, which path '{path}' has not"
    return None
