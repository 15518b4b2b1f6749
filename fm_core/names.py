"""The names fm_core understands, in a module that imports nothing heavy.

Sweep files are validated against these before anything starts, so `fmx validate` and every bad-input
error answer in well under a second instead of waiting for PyTorch to import. The modules that implement
each name import their list from here, so there is one source of truth.
"""

from __future__ import annotations

from fm_core.couplings import COUPLINGS
from fm_core.dataset_specs import DATASET_SPECS
from fm_core.objectives import OBJECTIVES
from fm_core.paths import PATHS
from fm_core.time_sampling import TIME_SAMPLERS

#: The schedules of fm_core.paths (a new one is a class there, nothing here).
PATH_NAMES: tuple[str, ...] = tuple(PATHS)
#: The objectives of fm_core.objectives (likewise); what each needs of a path and the times it trains with
#: are its class's attributes, read by `path_objective_problem` and `time_sampling_problem`.
OBJECTIVE_NAMES: tuple[str, ...] = tuple(OBJECTIVES)
#: The distributions of training times (fm_core.time_sampling); an objective trains with its default unless
#: `train.time_sampling` names another.
TIME_SAMPLING_NAMES: tuple[str, ...] = tuple(TIME_SAMPLERS)
#: The couplings of fm_core.couplings (likewise one class each, with their options and capabilities).
COUPLING_NAMES: tuple[str, ...] = tuple(COUPLINGS)
#: Each dataset's options (its constructor's keyword arguments; fm_core.datasets checks they agree on import);
#: what each option accepts is in fm_core.dataset_specs.
DATASET_OPTIONS: dict[str, tuple[str, ...]] = {name: spec.option_names for name, spec in DATASET_SPECS.items()}
DATASET_NAMES: tuple[str, ...] = tuple(DATASET_OPTIONS)
#: Function evaluations per step of each fixed-grid solver in torchdiffeq 0.2.5.
FIXED_STAGES: dict[str, int] = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}
ADAPTIVE_SOLVERS: tuple[str, ...] = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
SOLVER_NAMES: tuple[str, ...] = tuple(FIXED_STAGES) + ADAPTIVE_SOLVERS
#: Training precisions (autocast dtype; fp16 adds a gradient scaler) and sampling precisions: fm_core.precision.
PRECISION_NAMES: tuple[str, ...] = ("fp32", "bf16", "fp16")

