"""The sweep file: a pydantic schema, YAML loading, and errors that name the file, key and value.

Everything a sweep needs is checked here, before Ray or MLflow start, so bad input never reaches
a worker and nothing is half-written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fm_core.names import (
    ADAPTIVE_SOLVERS, COUPLING_NAMES, DATASET_NAMES, DATASET_OPTIONS, FIXED_STAGES, OBJECTIVE_NAMES, PATH_NAMES,
    SCORE_OBJECTIVES, SOLVER_NAMES,
)  # fmt: skip

IMAGE_DATASETS = ("digits", "image_folder", "cifar10")
FOLDER_DATASETS = ("image_folder", "cifar10")


class ConfigError(ValueError):
    """A sweep file problem, worded for the user: file, key, value, what is allowed."""

    def __init__(self, file: str | Path, key: str, message: str) -> None:
        self.file, self.key = str(file), key
        where = f"{file}: {key}: " if key else f"{file}: "
        super().__init__(where + message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    """`name` plus the dataset's own options (gmm: means/stds/weights; folders: root; ...)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: Literal[DATASET_NAMES]  # type: ignore[valid-type]

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelConfig(_Strict):
    """The network: `mlp` (hidden, depth) or `unet` (ADM-style, sizes as in the paper's Table 3)."""

    kind: Literal["mlp", "unet"] = "mlp"
    hidden: int = Field(512, gt=0)
    depth: int = Field(5, gt=0)
    model_channels: int = Field(32, gt=0)
    num_res_blocks: int = Field(1, gt=0)
    channel_mult: tuple[int, ...] = (1, 2)
    attention_resolutions: tuple[int, ...] = (4,)
    num_heads: int = Field(2, gt=0)
    num_head_channels: int = -1
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class TrainConfig(_Strict):
    """Optimisation and Ray Train scaling for every training trial of the sweep."""

    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float = Field(1e-3, gt=0)
    lr_schedule: Literal["constant", "poly"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    checkpoint_every: int = Field(500, gt=0)
    log_every: int = Field(50, gt=0)
    num_workers: int = Field(1, gt=0)
    use_gpu: bool = False
    torch_trainer: bool = Field(
        False, description="train through Ray Train's TorchTrainer even for one CPU worker (else in the Tune trial)"
    )
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(0, ge=0, description="Tune retries of a failed trial (and Train restarts)")
    sigma_min: float = Field(0.0, ge=0.0, description="OT path's sigma_min (the paper's 2D runs use ~1e-4)")

    @property
    def uses_torch_trainer(self) -> bool:
        """Several workers or GPUs need DDP through Ray Train; one CPU worker trains in the Tune trial itself."""
        return self.num_workers > 1 or self.use_gpu or self.torch_trainer


class EvalConfig(_Strict):
    """What each trained checkpoint is measured on, under every solver setting."""

    samples: int = Field(2000, gt=0)
    likelihood_points: int = Field(500, ge=0)
    divergence: Literal["auto", "exact", "hutchinson"] = "auto"
    probe: Literal["rademacher", "gaussian"] = "rademacher"
    dequant_draws: tuple[int, ...] = Field((1,), description="K for bits/dim; several values give Table 4's ablation")
    reference_tol: float | None = Field(
        1e-7, gt=0, lt=1,
        description="dopri5 tolerance of the reference solve from the same noise that ode_error is measured "
        "against; null skips it (no ode_error, no density over t): on images it costs more than the evaluation",
    )
    likelihood_solver: Literal["same", "dopri5"] = "same"
    batch_size: int | None = Field(
        None, gt=0, description="most points in one ODE solve (sampling and likelihood); unset: all at once"
    )
    at_steps: tuple[int, ...] = ()
    seed: int = 0

    @field_validator("dequant_draws", mode="before")
    @classmethod
    def _draws_list(cls, v: Any) -> Any:
        return (v,) if isinstance(v, int) else v

    @field_validator("dequant_draws")
    @classmethod
    def _draws_positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(k <= 0 for k in v):
            raise ValueError("needs one or more draw counts > 0")
        return tuple(sorted(set(v)))

    @field_validator("at_steps")
    @classmethod
    def _positive_sorted(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(s <= 0 for s in v):
            raise ValueError("every step must be > 0")
        return tuple(sorted(set(v)))


class FaultInjection(_Strict):
    """A deliberate NaN loss in chosen trials: lets users (and fmx's tests) see failure handling work."""

    nan_at_step: int = Field(gt=0)
    trials: tuple[str, ...] = Field(min_length=1, description="trial ids, e.g. vp-fm-independent-s0")


class GridConfig(_Strict):
    """Lists swept over. Training axes: path, objective, coupling, seed. Evaluation axes: solver, tol, nfe."""

    path: tuple[Literal[PATH_NAMES], ...] = ("ot",)  # type: ignore[valid-type]
    objective: tuple[Literal[OBJECTIVE_NAMES], ...] = ("fm",)  # type: ignore[valid-type]
    coupling: tuple[Literal[COUPLING_NAMES], ...] = ("independent",)  # type: ignore[valid-type]
    seed: tuple[int, ...] = (0,)
    solver: tuple[Literal[SOLVER_NAMES], ...] = ("dopri5",)  # type: ignore[valid-type]
    tol: tuple[float, ...] = ()
    nfe: tuple[int, ...] = ()
    pairs: tuple[tuple[str, ...], ...] | None = Field(
        None,
        description="explicit [path, objective] or [path, objective, coupling] rows instead of the full product",
    )

    @field_validator("tol")
    @classmethod
    def _tol_in_range(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        for tol in v:
            if not 0 < tol < 1:
                raise ValueError(f"tolerance {tol} must be in (0, 1)")
        return v

    @field_validator("nfe")
    @classmethod
    def _nfe_positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        for n in v:
            if n <= 0:
                raise ValueError(f"NFE budget {n} must be > 0")
        return v

    @field_validator("path", "objective", "coupling", "seed", "solver")
    @classmethod
    def _non_empty_unique(cls, v: tuple[Any, ...]) -> tuple[Any, ...]:
        if not v:
            raise ValueError("needs at least one value")
        if len(set(v)) != len(v):
            raise ValueError(f"repeats a value: {list(v)}")
        return v


class SweepConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    dataset: DatasetConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig
    eval: EvalConfig = EvalConfig()
    grid: GridConfig = GridConfig()
    invalid: Literal["reject", "skip"] = Field(
        "reject", description="what to do with combinations that make no sense (score objective on OT)"
    )
    storage_path: str | None = Field(None, description="checkpoints + Tune state; shared storage on a cluster")
    max_concurrent_trials: int | None = Field(None, gt=0)
    fault_injection: FaultInjection | None = None

    @model_validator(mode="after")
    def _solver_axes_fit(self) -> SweepConfig:
        fixed = [s for s in self.grid.solver if s in FIXED_STAGES]
        adaptive = [s for s in self.grid.solver if s in ADAPTIVE_SOLVERS]
        if self.grid.tol and not adaptive:
            raise _KeyedError("grid.tol", f"a tolerance only applies to adaptive solvers, not to {', '.join(fixed)}")
        if self.grid.nfe and not fixed:
            raise _KeyedError("grid.nfe", f"an NFE budget only applies to fixed-step solvers, not to {', '.join(adaptive)}")
        if adaptive and not self.grid.tol:
            raise _KeyedError("grid.tol", f"adaptive solver(s) {', '.join(adaptive)} need at least one tolerance")
        if fixed and not self.grid.nfe:
            raise _KeyedError("grid.nfe", f"fixed-step solver(s) {', '.join(fixed)} need at least one NFE budget")
        for n in self.grid.nfe:
            too_small = [s for s in fixed if n < FIXED_STAGES[s]]
            if too_small:
                raise _KeyedError("grid.nfe", f"budget {n} is below one step of {', '.join(too_small)}")
        if self.dataset.name in IMAGE_DATASETS and self.model.kind != "unet":
            raise _KeyedError("model.kind", f"image dataset '{self.dataset.name}' needs model.kind: unet")
        if self.dataset.name not in IMAGE_DATASETS and self.model.kind != "mlp":
            raise _KeyedError("model.kind", f"low-dimensional dataset '{self.dataset.name}' needs model.kind: mlp")
        if self.train.checkpoint_every > self.train.steps:
            object.__setattr__(self.train, "checkpoint_every", self.train.steps)
        late = [s for s in self.eval.at_steps if s > self.train.steps]
        if late:
            raise _KeyedError("eval.at_steps", f"steps {late} are beyond train.steps = {self.train.steps}")
        if self.grid.pairs is not None:
            for i, row in enumerate(self.grid.pairs):
                if len(row) not in (2, 3):
                    raise _KeyedError(f"grid.pairs[{i}]", f"expected [path, objective] or [path, objective, coupling], got {list(row)}")
                p, o = row[0], row[1]
                if len(row) == 3 and row[2] not in COUPLING_NAMES:
                    raise _KeyedError(
                        f"grid.pairs[{i}]", f"unknown coupling '{row[2]}'; choose one of {', '.join(COUPLING_NAMES)}"
                    )
                if p not in PATH_NAMES:
                    raise _KeyedError(f"grid.pairs[{i}]", f"unknown path '{p}'; choose one of {', '.join(PATH_NAMES)}")
                if o not in OBJECTIVE_NAMES:
                    raise _KeyedError(
                        f"grid.pairs[{i}]", f"unknown objective '{o}'; choose one of {', '.join(OBJECTIVE_NAMES)}"
                    )
        return self

    def method_rows(self) -> list[tuple[str, str, str | None]]:
        """(path, objective, coupling or None = every grid coupling) rows, before the validity filter."""
        if self.grid.pairs is not None:
            return [(r[0], r[1], r[2] if len(r) == 3 else None) for r in self.grid.pairs]
        return [(p, o, None) for p in self.grid.path for o in self.grid.objective]

    def path_objective_pairs(self) -> list[tuple[str, str]]:
        """The (path, objective) pairs to train, before the validity filter."""
        return [(p, o) for p, o, _ in self.method_rows()]


class _KeyedError(ValueError):
    """Raised inside validators to point at a key other than the one pydantic is checking."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


def is_valid_pair(path: str, objective: str) -> bool:
    """Score-based objectives need a diffusion path: their ODE is defined through a score."""
    return not (objective in SCORE_OBJECTIVES and path == "ot")


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("literal[", "tuple[", "function-")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _first_error(file: str | Path, err: ValidationError) -> ConfigError:
    errors = err.errors()
    # A misspelt key also makes its correct spelling "missing": the unknown key is the real cause.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = _format_loc(first["loc"])
    ctx_err = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _KeyedError):
        return ConfigError(file, ctx_err.key, str(ctx_err))
    if first["type"] == "extra_forbidden":
        parent, _, leaf = key.rpartition(".")
        return ConfigError(file, key, f"unknown key '{leaf}'" + (f" in '{parent}'" if parent else ""))
    if first["type"] == "missing":
        return ConfigError(file, key, "required key is missing")
    value = first.get("input")
    message = first["msg"].removeprefix("Value error, ")
    return ConfigError(file, key, f"{message} (got {value!r})" if value is not None else message)


def _check_dataset(file: str | Path, ds: DatasetConfig, base: Path) -> None:
    """Dataset options must be known to fm_core, and data folders must exist, before anything starts."""
    params = DATASET_OPTIONS[ds.name]
    for key in ds.options:
        if key not in params:
            raise ConfigError(
                file, f"dataset.{key}", f"unknown option for dataset '{ds.name}'; valid: {', '.join(params) or '(none)'}"
            )
    if ds.name in FOLDER_DATASETS:
        root = ds.options.get("root")
        if root is None:
            raise ConfigError(file, "dataset.root", f"dataset '{ds.name}' needs a local folder: root")
        path = Path(str(root)).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_dir():
            raise ConfigError(file, "dataset.root", f"data folder '{root}' does not exist")
        # Trials run in Ray workers with their own working directory: pin the folder now.
        assert ds.model_extra is not None
        ds.model_extra["root"] = str(path.resolve())


def parse_sweep(data: Any, file: str | Path = "<sweep>", base: Path | None = None) -> SweepConfig:
    """Validate an already-loaded mapping (what YAML gave) into a SweepConfig."""
    if not isinstance(data, dict):
        raise ConfigError(file, "", f"expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        config = SweepConfig.model_validate(data)
    except ValidationError as err:
        raise _first_error(file, err) from None
    _check_dataset(file, config.dataset, base or Path.cwd())
    pairs = config.path_objective_pairs()
    bad = [(p, o) for p, o in pairs if not is_valid_pair(p, o)]
    if bad and config.invalid == "reject":
        p, o = bad[0]
        raise ConfigError(
            file,
            "grid",
            f"objective '{o}' on path '{p}' makes no sense (score objectives need a diffusion path); "
            "remove it, list grid.pairs explicitly, or set `invalid: skip`",
        )
    if not [pair for pair in pairs if is_valid_pair(*pair)]:
        raise ConfigError(file, "grid", "no valid (path, objective) combination is left to train")
    if config.fault_injection is not None:
        from orchestrator.plan import plan_sweep

        ids = {key.trial_id for key in plan_sweep(config).trainings}
        unknown = [t for t in config.fault_injection.trials if t not in ids]
        if unknown:
            raise ConfigError(file, "fault_injection.trials", f"{unknown} are not trials of this sweep: {sorted(ids)}")
    return config


def load_sweep(file: str | Path) -> SweepConfig:
    """Read and validate a sweep YAML file; every problem is a ConfigError naming the file and key."""
    path = Path(file)
    if not path.is_file():
        raise ConfigError(file, "", "sweep file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(file, "", f"malformed YAML: {where}{problem}") from None
    return parse_sweep(_expand_env(data), file)


def _expand_env(value: Any) -> Any:
    """`${VAR}` in string values comes from the environment (data roots that differ per machine)."""
    if isinstance(value, str):
        return os.path.expandvars(value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value
