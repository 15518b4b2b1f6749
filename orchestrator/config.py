"""The sweep file: a pydantic schema, YAML loading, and errors that name the file, key and value.

Everything a sweep needs is checked here, before Ray or MLflow start, so bad input never reaches
a worker and nothing is half-written.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError, field_validator,
    model_validator,
)  # fmt: skip

from fm_core.checks import OPEN_FRACTION, SEEDS, Range, integers, short_repr
from fm_core.dataset_specs import DATASET_SPECS, OptionError, check_options
from fm_core.models.spec import UNetSpec, mlp_parameter_count
from fm_core.solvers import SolverSetting
from fm_core.names import (
    PRECISION_NAMES,
    ADAPTIVE_SOLVERS, COUPLING_NAMES, DATASET_NAMES, FIXED_STAGES, OBJECTIVE_NAMES, PATH_NAMES,
    SOLVER_NAMES, TIME_SAMPLING_NAMES, path_objective_problem, time_sampling_problem,
)  # fmt: skip

from fm_core.paths import PATHS  # noqa: E402 - torch-free: the schedules' names, options and capabilities
from fm_core.time_sampling import TIME_SAMPLERS  # noqa: E402 - torch-free too
from fm_core.lazy import option_problem  # noqa: E402

IMAGE_DATASETS = tuple(name for name, spec in DATASET_SPECS.items() if spec.is_image)
#: A sweep file is a few KiB; a bigger one is a mistake (or an attack), refused before YAML parses it.
MAX_FILE_BYTES = 256 * 1024
#: Values in the file counting every YAML *alias as a copy of its &anchor: a "billion laughs" file of a few
#: hundred bytes expands to billions; the largest shipped sweep has about a hundred.
MAX_NODES = 100_000
#: Most optimisation steps, evaluation checkpoints and similar step counts (the paper's CIFAR-10 run: 400k).
MAX_STEPS = 10_000_000
#: Most points in one batch (training or evaluation): far beyond what fits a GPU for images.
MAX_BATCH = 100_000
#: Most NFE of one fixed-step solve: the paper's budgets are up to a few hundred.
MAX_NFE = 10_000
#: The paper's likelihood protocol: dopri5 at atol = rtol = 1e-5.
DEFAULT_LIKELIHOOD_TOL = 1e-5


def _number(rng: Range) -> Any:
    """An int or float field bounded by `rng`: bools, NaN, infinity and floats for ints are refused, and
    the message states the allowed range."""
    return Annotated[int if rng.integer else float, BeforeValidator(rng.check)]


def _no_repeats(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """A list axis with a value twice would train or evaluate it twice (or silently once)."""
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"repeats {value!r}; list each value once")
        seen.add(value)
    return values


def _non_empty(values: tuple[Any, ...]) -> tuple[Any, ...]:
    if not values:
        raise ValueError("needs at least one value")
    return values


def _axis(item: Any, non_empty: bool = False) -> Any:
    """A list of distinct values (a tuple once validated)."""
    checks = (AfterValidator(_non_empty),) if non_empty else ()
    return Annotated[tuple[item, ...], AfterValidator(_no_repeats), *checks]


def _head_channels(value: Any) -> Any:
    """-1 (the U-Net then takes num_heads heads) or a channel count per head."""
    if integers(-1, 4096).contains(value) and value != 0:
        return value
    raise ValueError("must be -1 (heads from num_heads) or an integer in [1, 4096]")


Count = _number(integers(1, MAX_STEPS))
Seed = _number(SEEDS)
Tolerance = _number(OPEN_FRACTION)


class ConfigError(ValueError):
    """A sweep file problem, worded for the user: file, key, value, what is allowed."""

    def __init__(self, file: str | Path, key: str, message: str) -> None:
        self.file, self.key, self.message = str(file), key, message
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
    hidden: _number(integers(1, 8192)) = 512  # type: ignore[valid-type]
    depth: _number(integers(1, 64)) = 5  # type: ignore[valid-type]
    model_channels: _number(integers(1, 1024)) = 32  # type: ignore[valid-type]
    num_res_blocks: _number(integers(1, 16)) = 1  # type: ignore[valid-type]
    channel_mult: tuple[_number(integers(1, 16)), ...] = Field((1, 2), min_length=1, max_length=8)  # type: ignore[valid-type]
    attention_resolutions: _axis(_number(integers(1, 1024))) = (4,)  # type: ignore[valid-type]
    num_heads: _number(integers(1, 64)) = 2  # type: ignore[valid-type]
    num_head_channels: Annotated[int, BeforeValidator(_head_channels)] = Field(
        -1, description="-1: num_heads heads; else channels per head (the paper's CIFAR-10 U-Net: 64)"
    )
    dropout: _number(Range(0.0, 1.0, hi_open=True)) = 0.0  # type: ignore[valid-type]


#: The model.* fields each kind reads (the others are ignored by it, and not logged on its runs).
MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "mlp": ("hidden", "depth"),
    "unet": ("model_channels", "num_res_blocks", "channel_mult", "attention_resolutions", "num_heads", "num_head_channels", "dropout"),
}


class TimeSamplingConfig(_Strict):
    """How training draws t: `kind` (fm_core.time_sampling; null: each objective's own, uniform but for
    scoreflow's likelihood weighting) and that kind's options (logit_normal: loc, scale)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: Literal[TIME_SAMPLING_NAMES] | None = None  # type: ignore[valid-type]

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _options_of_the_kind(self) -> TimeSamplingConfig:
        if self.kind is None and self.options:
            raise _KeyedError("train.time_sampling", f"options {', '.join(self.options)} need a kind")
        problem = option_problem(TIME_SAMPLERS[self.kind], self.options, f"time sampling '{self.kind}'") if self.kind else None
        if problem:
            name, message = problem
            raise _KeyedError("train.time_sampling" + (f".{name}" if name else ""), message)
        return self


class TrainConfig(_Strict):
    """Optimisation and Ray Train scaling for every training trial of the sweep."""

    steps: Count  # type: ignore[valid-type]
    batch_size: _number(integers(1, MAX_BATCH))  # type: ignore[valid-type]
    lr: _number(Range(0.0, 1.0, lo_open=True, hi_open=True)) = 1e-3  # type: ignore[valid-type]
    lr_schedule: Literal["constant", "poly"] = "constant"
    warmup_steps: _number(integers(0, MAX_STEPS)) = 0  # type: ignore[valid-type]
    grad_clip: _number(Range(0.0, 1e6, lo_open=True)) | None = None  # type: ignore[valid-type]
    ema_decay: _number(Range(0.0, 1.0, lo_open=True, hi_open=True)) | None = Field(  # type: ignore[valid-type]
        None, description="EMA of the weights (e.g. 0.9999); evaluations then use the average. null: off"
    )
    ema_warmup: StrictBool = Field(True, description="decay min(ema_decay, (1+n)/(10+n)) at the n-th update")
    precision: Literal[PRECISION_NAMES] = Field(  # type: ignore[valid-type]
        "fp32", description="autocast dtype of training (fp16 with a gradient scaler); likelihoods stay fp32"
    )
    compile: StrictBool = Field(False, description="torch.compile the model for training (not for evaluation)")
    compile_fallback: StrictBool = Field(
        True, description="where compilation fails, say so in one line and train uncompiled (false: the trial fails)"
    )
    checkpoint_every: Count = 500  # type: ignore[valid-type]
    log_every: Count = 50  # type: ignore[valid-type]
    num_workers: _number(integers(1, 1024)) = 1  # type: ignore[valid-type]
    grad_accum: _number(integers(1, 1024)) = Field(  # type: ignore[valid-type]
        1, description="micro-batches per optimizer step: batch_size stays the global batch with fewer workers"
    )
    use_gpu: StrictBool = False
    torch_trainer: StrictBool = Field(
        False, description="train through Ray Train's TorchTrainer even for one CPU worker (else in the Tune trial)"
    )
    # Ray counts resources in units of 1e-4; a trial asking for more than any node has waits forever.
    cpus_per_worker: _number(Range(1e-4, 1024.0)) = 1.0  # type: ignore[valid-type]
    max_failures: _number(integers(0, 100)) = Field(0, description="Tune retries of a failed trial (and Train restarts)")  # type: ignore[valid-type]
    sigma_min: _number(Range(0.0, 1.0, hi_open=True)) = Field(  # type: ignore[valid-type]
        0.0, description="the std left at the data end, for the paths that take it (ot; the paper's 2D runs use ~1e-4)"
    )
    label_dropout: _number(Range(0.0, 1.0, lo_open=True, hi_open=True)) | None = Field(  # type: ignore[valid-type]
        None, description="train a class-conditional model, each label dropped to the null class with this "
        "probability (classifier-free guidance; datasets with labels); null: unconditional",
    )
    time_sampling: TimeSamplingConfig = Field(
        TimeSamplingConfig(), description="the distribution of training times: {kind: uniform | logit_normal | likelihood, ...}"
    )
    path_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="each path's schedule options, e.g. {poly: {n: 3}, vp: {beta_max: 20}}"
    )

    @field_validator("path_options")
    @classmethod
    def _path_options_exist(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """Names and values a path accepts, from the path classes themselves (fm_core.paths)."""
        for path, options in value.items():
            if path not in PATHS:
                raise _KeyedError(f"train.path_options.{path}", f"unknown path '{path}'; choose one of {', '.join(PATHS)}")
            problem = option_problem(PATHS[path], options, f"path '{path}'")
            if problem:
                name, message = problem
                raise _KeyedError(f"train.path_options.{path}" + (f".{name}" if name else ""), message)
        return value

    def path_options_for(self, path: str) -> dict[str, float]:
        """The options `path` is built with: its `path_options`, and `sigma_min` where the path takes it."""
        options = dict(self.path_options.get(path, {}))
        option = PATHS[path].sigma_min_option
        if option is not None and option not in options:
            options[option] = self.sigma_min
        return options

    @property
    def worker_batch(self) -> int:
        """Examples one worker trains on per optimizer step (batch_size is the global batch)."""
        return self.batch_size // self.num_workers

    @property
    def micro_batch(self) -> int:
        """Examples in one forward/backward pass of one worker (worker_batch / grad_accum)."""
        return self.worker_batch // self.grad_accum

    @property
    def uses_torch_trainer(self) -> bool:
        """Several workers or GPUs need DDP through Ray Train; one CPU worker trains in the Tune trial itself."""
        return self.num_workers > 1 or self.use_gpu or self.torch_trainer


PER_SAMPLE_SOLVER = "per_sample_solver"


class LikelihoodConfig(_Strict):
    """The likelihood protocol. A likelihood is a property of the model, not of the sampler: the paper integrates
    it once with dopri5 at atol = rtol = 1e-5, and integrating it with an 8-step Euler instead makes a model look
    better than it is. So it is computed once per evaluated checkpoint unless the file asks otherwise."""

    solver: Literal[(*SOLVER_NAMES, PER_SAMPLE_SOLVER)] = "dopri5"  # type: ignore[valid-type]
    tol: Tolerance | None = None  # type: ignore[valid-type]
    nfe: _number(integers(1, MAX_NFE)) | None = None  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _default_tol(cls, data: Any) -> Any:
        """An adaptive solver without tol or nfe takes the paper's tolerance."""
        if isinstance(data, dict) and data.get("solver", "dopri5") in ADAPTIVE_SOLVERS and "tol" not in data and "nfe" not in data:
            return {**data, "tol": DEFAULT_LIKELIHOOD_TOL}
        return data

    @model_validator(mode="after")
    def _one_setting(self) -> LikelihoodConfig:
        if self.solver == PER_SAMPLE_SOLVER:
            if self.tol is not None or self.nfe is not None:
                raise _KeyedError("eval.likelihood", "per_sample_solver takes each sample solver's own tol/nfe: drop tol and nfe")
            return self
        try:
            self.setting()
        except ValueError as err:
            raise _KeyedError("eval.likelihood", str(err)) from None
        return self

    @property
    def per_sample_solver(self) -> bool:
        return self.solver == PER_SAMPLE_SOLVER

    def setting(self) -> SolverSetting | None:
        """The one solver setting every row of a checkpoint shares, or None when each sample solver is used."""
        return None if self.per_sample_solver else SolverSetting(self.solver, tol=self.tol, nfe_budget=self.nfe)


class EvalConfig(_Strict):
    """What each trained checkpoint is measured on, under every solver setting."""

    samples: _number(integers(1, MAX_BATCH)) = 2000  # type: ignore[valid-type]
    likelihood_points: _number(integers(0, MAX_BATCH)) = 500  # type: ignore[valid-type]
    divergence: Literal["auto", "exact", "hutchinson"] = "auto"
    probe: Literal["rademacher", "gaussian"] = "rademacher"
    dequant_draws: _axis(_number(integers(1, 1000)), non_empty=True) = Field(  # type: ignore[valid-type]
        (1,), description="K for bits/dim; several values give Table 4's ablation"
    )
    reference_tol: Tolerance | None = Field(  # type: ignore[valid-type]
        1e-7,
        description="dopri5 tolerance of the reference solve from the same noise that ode_error is measured "
        "against; null skips it (no ode_error, no density over t): on images it costs more than the evaluation",
    )
    likelihood: LikelihoodConfig = Field(
        default_factory=lambda: LikelihoodConfig.model_validate({}),
        description="how NLL / bits per dim is integrated: once per checkpoint with this solver (the paper's "
        "dopri5 at 1e-5), or `solver: per_sample_solver` to integrate it with each sample solver instead",
    )
    batch_size: _number(integers(1, MAX_BATCH)) | None = Field(  # type: ignore[valid-type]
        None, description="most points in one ODE solve (sampling and likelihood); unset: all at once"
    )
    at_steps: _axis(Count) = ()  # type: ignore[valid-type]
    seed: Seed = 0  # type: ignore[valid-type]
    precision: Literal[PRECISION_NAMES] = Field(  # type: ignore[valid-type]
        "fp32", description="autocast dtype of sampling (the likelihood is always integrated in fp32)"
    )

    @field_validator("dequant_draws", mode="before")
    @classmethod
    def _draws_list(cls, v: Any) -> Any:
        return (v,) if isinstance(v, int) else v

    @field_validator("dequant_draws", "at_steps")
    @classmethod
    def _sorted(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(v))


class FaultInjection(_Strict):
    """A deliberate NaN loss in chosen trials: lets users (and fmx's tests) see failure handling work."""

    nan_at_step: Count  # type: ignore[valid-type]
    trials: _axis(str, non_empty=True) = Field(description="trial ids, e.g. vp-fm-independent-s0")  # type: ignore[valid-type]


class GridConfig(_Strict):
    """Lists swept over. Training axes: path, objective, coupling, seed. Evaluation axes: solver, tol, nfe."""

    path: _axis(Literal[PATH_NAMES], non_empty=True) = ("ot",)  # type: ignore[valid-type]
    objective: _axis(Literal[OBJECTIVE_NAMES], non_empty=True) = ("fm",)  # type: ignore[valid-type]
    coupling: _axis(Literal[COUPLING_NAMES], non_empty=True) = ("independent",)  # type: ignore[valid-type]
    seed: _axis(Seed, non_empty=True) = (0,)  # type: ignore[valid-type]
    solver: _axis(Literal[SOLVER_NAMES], non_empty=True) = ("dopri5",)  # type: ignore[valid-type]
    tol: _axis(Tolerance) = ()  # type: ignore[valid-type]
    nfe: _axis(_number(integers(1, MAX_NFE))) = ()  # type: ignore[valid-type]
    pairs: _axis(tuple[str, ...]) | None = Field(  # type: ignore[valid-type]
        None,
        description="explicit [path, objective] or [path, objective, coupling] rows instead of the full product",
    )
    cfg_scale: _axis(_number(Range(0.0, 100.0))) = Field(  # type: ignore[valid-type]
        (), description="classifier-free guidance scales to evaluate (1: the conditional field, 0: the unconditional)"
    )
    train: dict[str, tuple[Any, ...]] | None = Field(
        None, description="training options as axes, each value trained once: {lr: [1e-3, 3e-4], ema_decay: [null, 0.999]}"
    )


class LimitsConfig(_Strict):
    """How big a grid may be before fmx refuses it as a likely mistake; a sweep file may raise them."""

    max_trainings: _number(integers(1, 1_000_000)) = 10_000  # type: ignore[valid-type]
    max_evaluations: _number(integers(1, 100_000_000)) = 1_000_000  # type: ignore[valid-type]
    #: ~16 bytes a parameter to train with Adam in fp32 (weights, gradients, two moments): 1e9 is ~16 GB.
    max_parameters: _number(integers(1, 10**12)) = 1_000_000_000  # type: ignore[valid-type]


class SweepConfig(_Strict):
    name: str = Field(max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = Field("", max_length=10_000)
    dataset: DatasetConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig
    eval: EvalConfig = EvalConfig()
    grid: GridConfig = GridConfig()
    invalid: Literal["reject", "skip"] = Field(
        "reject", description="what to do with combinations that make no sense (score objective on OT)"
    )
    storage_path: str | None = Field(None, description="checkpoints + Tune state; shared storage on a cluster")
    max_concurrent_trials: _number(integers(1, 10_000)) | None = None  # type: ignore[valid-type]
    fault_injection: FaultInjection | None = None
    limits: LimitsConfig = LimitsConfig()
    written_as: dict[str, str] = Field(
        default_factory=dict,
        description="not a key of the file: dotted key -> the text the file wrote where ${VAR} was expanded, "
        "so that logs show '${CIFAR10_ROOT}' rather than the value (which may be private)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        _check_solver_axes(self.grid)
        _check_model_kind(self.dataset.name, self.model.kind)
        _check_steps(self.train, self.eval)
        if self.grid.pairs is not None:
            _check_pairs(self.grid)
        return self

    def method_rows(self) -> list[tuple[str, str, str | None]]:
        """(path, objective, coupling or None = every grid coupling) rows, before the validity filter."""
        if self.grid.pairs is not None:
            return [(r[0], r[1], r[2] if len(r) == 3 else None) for r in self.grid.pairs]
        return [(p, o, None) for p in self.grid.path for o in self.grid.objective]

    def train_variants(self, only: str | None = None) -> list[tuple[tuple[str, str], ...]]:
        """Every combination of the grid's training-option values, as TrainingKey.train tuples ([()] without
        `grid.train`); `only`: of that one axis."""
        import itertools
        import json

        axes = {k: v for k, v in (self.grid.train or {}).items() if only is None or k == only}
        texts = [[(name, json.dumps(value, sort_keys=True, separators=(",", ":"))) for value in values] for name, values in axes.items()]
        return [tuple(combo) for combo in itertools.product(*texts)]

    def time_kind(self, variant: tuple[tuple[str, str], ...]) -> str | None:
        """The time sampling a training-option variant trains with (its own axis value, else the file's)."""
        import json

        for name, text in variant:
            if name == "time_sampling":
                return (json.loads(text) or {}).get("kind")
        return self.train.time_sampling.kind

    def for_training(self, key: Any) -> SweepConfig:
        """The sweep as one training sees it: `train` with its key's training-option values (grid.train)."""
        overrides = getattr(key, "overrides", None)
        if not overrides:
            return self
        train = TrainConfig.model_validate({**self.train.model_dump(), **overrides})
        return self.model_copy(update={"train": train})

    def path_objective_pairs(self) -> list[tuple[str, str]]:
        """The (path, objective) pairs to train, before the validity filter."""
        return [(p, o) for p, o, _ in self.method_rows()]


def _check_solver_axes(grid: GridConfig) -> None:
    """Tolerances go with adaptive solvers and NFE budgets with fixed-step ones, each needing the other."""
    fixed = [s for s in grid.solver if s in FIXED_STAGES]
    adaptive = [s for s in grid.solver if s in ADAPTIVE_SOLVERS]
    if grid.tol and not adaptive:
        raise _KeyedError("grid.tol", f"a tolerance only applies to adaptive solvers, not to {', '.join(fixed)}")
    if grid.nfe and not fixed:
        raise _KeyedError("grid.nfe", f"an NFE budget only applies to fixed-step solvers, not to {', '.join(adaptive)}")
    if adaptive and not grid.tol:
        raise _KeyedError("grid.tol", f"adaptive solver(s) {', '.join(adaptive)} need at least one tolerance")
    if fixed and not grid.nfe:
        raise _KeyedError("grid.nfe", f"fixed-step solver(s) {', '.join(fixed)} need at least one NFE budget")
    for n in grid.nfe:
        too_small = [s for s in fixed if n < FIXED_STAGES[s]]
        if too_small:
            raise _KeyedError("grid.nfe", f"budget {n} is below one step of {', '.join(too_small)}")


def _check_model_kind(dataset: str, kind: str) -> None:
    if dataset in IMAGE_DATASETS and kind != "unet":
        raise _KeyedError("model.kind", f"image dataset '{dataset}' needs model.kind: unet")
    if dataset not in IMAGE_DATASETS and kind != "mlp":
        raise _KeyedError("model.kind", f"low-dimensional dataset '{dataset}' needs model.kind: mlp")


def _check_steps(train: TrainConfig, evaluation: EvalConfig) -> None:
    """Extra checkpoints to evaluate lie strictly before the final step, which is always evaluated."""
    if train.checkpoint_every > train.steps:
        object.__setattr__(train, "checkpoint_every", train.steps)
    late = [s for s in evaluation.at_steps if s > train.steps]
    if late:
        raise _KeyedError("eval.at_steps", f"steps {late} are beyond train.steps = {train.steps}")
    if train.steps in evaluation.at_steps:
        raise _KeyedError(
            "eval.at_steps", f"repeats {train.steps}, train.steps, which is always evaluated; remove it from the list"
        )


def _check_pairs(grid: GridConfig) -> None:
    """Each row names a known path, objective (and coupling), and no two rows train the same configuration."""
    assert grid.pairs is not None
    trained: dict[tuple[str, str, str], int] = {}
    for i, row in enumerate(grid.pairs):
        if len(row) not in (2, 3):
            raise _KeyedError(f"grid.pairs[{i}]", f"expected [path, objective] or [path, objective, coupling], got {list(row)}")
        for value, names, what in zip(row, (PATH_NAMES, OBJECTIVE_NAMES, COUPLING_NAMES), ("path", "objective", "coupling")):
            if value not in names:
                raise _KeyedError(f"grid.pairs[{i}]", f"unknown {what} '{value}'; choose one of {', '.join(names)}")
        for coupling in row[2:] or grid.coupling:
            first = trained.setdefault((row[0], row[1], coupling), i)
            if first != i:
                raise _KeyedError(
                    f"grid.pairs[{i}]", f"trains {row[0]}+{row[1]} with coupling {coupling} again, as grid.pairs[{first}] does"
                )


class _KeyedError(ValueError):
    """Raised inside validators to point at a key other than the one pydantic is checking."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


def pair_problem(path: str, objective: str, time_kind: str | None = None) -> str | None:
    """Why the objective cannot train on the path with these times (fm_core's capabilities), or None."""
    return path_objective_problem(path, objective) or time_sampling_problem(path, objective, time_kind)


def is_valid_pair(path: str, objective: str, time_kind: str | None = None) -> bool:
    return pair_problem(path, objective, time_kind) is None


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
    return ConfigError(file, key, f"{message} (got {short_repr(value)})" if value is not None else message)


def _check_dataset(file: str | Path, ds: DatasetConfig, base: Path) -> None:
    """Every option as fm_core.dataset_specs describes it, and data folders that exist, before anything starts."""
    try:
        check_options(ds.name, ds.options)
    except OptionError as err:
        raise ConfigError(file, f"dataset.{err.option}", str(err)) from None
    assert ds.model_extra is not None
    for option in DATASET_SPECS[ds.name].path_options:
        # Trials run in Ray workers with their own working directory: pin the folder now.
        ds.model_extra[option] = str(_existing_folder(file, f"dataset.{option}", ds.options[option], base))


def _existing_folder(file: str | Path, key: str, text: str, base: Path) -> Path:
    path = _user_path(file, key, text)
    path = path if path.is_absolute() else base / path
    try:
        if not path.is_dir():
            raise ConfigError(file, key, f"data folder '{text}' " + ("is not a folder" if path.exists() else "does not exist"))
        return path.resolve()
    except (OSError, ValueError) as err:  # a name too long for the filesystem, a NUL byte
        raise ConfigError(file, key, f"data folder '{text[:200]}' cannot be used: {getattr(err, 'strerror', None) or err}") from None


def _user_path(file: str | Path, key: str, text: str) -> Path:
    try:
        return Path(text).expanduser()
    except RuntimeError as err:  # ~nosuchuser
        raise ConfigError(file, key, f"cannot expand '{text}': {err}") from None


def _check_storage_path(file: str | Path, config: SweepConfig) -> None:
    if config.storage_path is not None and "://" not in config.storage_path:
        if not config.storage_path.strip():
            raise ConfigError(file, "storage_path", "must be a folder (or omitted for results/<name>)")
        path = _user_path(file, "storage_path", config.storage_path)
        try:  # the folder may not exist yet (a sweep creates it), but must be able to
            if path.exists() and not path.is_dir():
                raise ConfigError(file, "storage_path", f"'{config.storage_path}' is not a folder")
            path.resolve()
            os.lstat(path if path.exists() else path.parent if path.parent.exists() else Path("/"))
            for part in path.parts:
                if len(part.encode()) > 255:
                    raise OSError(errno.ENAMETOOLONG, "File name too long")
        except (OSError, ValueError) as err:
            raise ConfigError(
                file, "storage_path", f"'{config.storage_path[:200]}' cannot be used: {getattr(err, 'strerror', None) or err}"
            ) from None


def _check_grid_keys(file: str | Path, grid: GridConfig) -> None:
    """grid.pairs replaces path x objective: written beside them, one of the two would silently win."""
    if grid.pairs is None:
        return
    for key in ("path", "objective"):
        if key in grid.model_fields_set:
            raise ConfigError(file, "grid.pairs", f"lists rows of path and objective, so grid.{key} is contradictory; remove one")
    if "coupling" in grid.model_fields_set and all(len(row) == 3 for row in grid.pairs):
        raise ConfigError(
            file, "grid.pairs", "every row names its coupling, so grid.coupling would apply to none; remove one"
        )


def _check_train_axes(file: str | Path, config: SweepConfig) -> None:
    """grid.train: options of `train` that a training computes with (not its length or how it runs), each
    value valid as that option, none repeated, none also fixed in `train`."""
    import json

    from orchestrator.cells import OPERATIONAL_TRAIN_FIELDS

    fixed = OPERATIONAL_TRAIN_FIELDS | {"steps", "num_workers", "label_dropout"}
    for name, values in (config.grid.train or {}).items():
        key = f"grid.train.{name}"
        if name not in TrainConfig.model_fields:
            raise ConfigError(file, key, f"unknown training option '{name}'; an axis is one of train's options")
        if name in fixed:
            raise ConfigError(file, key, f"train.{name} cannot be an axis: it decides how a training runs or "
                                         "where its evaluations are, not what it computes; sweep it in another file")  # fmt: skip
        if name in config.train.model_fields_set:
            raise ConfigError(file, key, f"train.{name} is also set in train; remove one")
        if not values:
            raise ConfigError(file, key, "an axis needs at least one value")
        seen: set[str] = set()
        for i, value in enumerate(values):
            text = json.dumps(value, sort_keys=True)
            if text in seen:
                raise ConfigError(file, f"{key}[{i}]", f"repeats the value {value!r}")
            seen.add(text)
            try:
                train = TrainConfig.model_validate({**config.train.model_dump(), name: value})
            except ValidationError as err:
                raise ConfigError(file, f"{key}[{i}]", _first_error(file, err).message) from None
            _check_batch(file, train)


def _check_guidance(file: str | Path, config: SweepConfig) -> None:
    """A class-conditional model needs labels in the data; guidance scales need a class-conditional model."""
    spec = DATASET_SPECS[config.dataset.name]
    if config.train.label_dropout is not None and not spec.has_labels:
        labelled = ", ".join(name for name, s in DATASET_SPECS.items() if s.has_labels)
        raise ConfigError(file, "train.label_dropout", f"dataset '{config.dataset.name}' has no class labels ({labelled} have)")
    if config.grid.cfg_scale and config.train.label_dropout is None:
        raise ConfigError(file, "grid.cfg_scale", "guidance needs a class-conditional model: set train.label_dropout (e.g. 0.1)")


def _check_batch(file: str | Path, train: TrainConfig) -> None:
    """batch_size is the global batch: it must split evenly over the workers and their accumulation steps."""
    parts = train.num_workers * train.grad_accum
    if train.batch_size % parts:
        raise ConfigError(
            file, "train.batch_size", f"the global batch {train.batch_size} does not split into {train.num_workers} "
            f"worker(s) x {train.grad_accum} accumulation step(s); use a multiple of {parts}",
        )


def _check_combinations(file: str | Path, config: SweepConfig) -> None:
    pairs = config.path_objective_pairs()
    kinds = list(dict.fromkeys(config.time_kind(v) for v in config.train_variants(only="time_sampling")))
    bad = [(p, o, k) for p, o in pairs for k in kinds if not is_valid_pair(p, o, k)]
    if bad and config.invalid == "reject":
        p, o, k = bad[0]
        where = "grid.train.time_sampling" if config.grid.train and "time_sampling" in config.grid.train else "train.time_sampling.kind"
        key = "grid" if path_objective_problem(p, o) else where
        raise ConfigError(
            file, key, f"{pair_problem(p, o, k)}; remove it, list grid.pairs explicitly, or set `invalid: skip`"
        )
    if not [pair for pair in pairs for k in kinds if is_valid_pair(*pair, k)]:
        raise ConfigError(file, "grid", "no valid (path, objective) combination is left to train")


def _check_size(file: str | Path, config: SweepConfig) -> None:
    """A grid beyond `limits` is refused from the product of its axes, before any list is built."""
    from orchestrator.plan import count_evaluations, count_trainings

    for key, count in (("max_trainings", count_trainings(config)), ("max_evaluations", count_evaluations(config))):
        limit = getattr(config.limits, key)
        if count > limit:
            what = key.removeprefix("max_")
            raise ConfigError(
                file, "grid", f"{count} {what} exceed limits.{key} = {limit}; shrink the grid, or raise the limit "
                f"with a top-level `limits: {{{key}: {count}}}` if you mean it",
            )


def _check_model_fits(file: str | Path, config: SweepConfig) -> None:
    """The network fits its dataset's shape (a U-Net's levels divide the image, attention where feature maps
    exist, heads divide channels) and stays within limits.max_parameters: refused here, not in every trial."""
    model = config.model
    shape = DATASET_SPECS[config.dataset.name].shape(config.dataset.options)
    if shape is None:  # native image sizes: only the data tells; the trial checks it
        return
    if model.kind == "mlp":
        count = mlp_parameter_count(math.prod(shape), model.hidden, model.depth)
    else:
        spec = UNetSpec(
            in_channels=shape[0], image_size=shape[-1], model_channels=model.model_channels,
            num_res_blocks=model.num_res_blocks, channel_mult=tuple(model.channel_mult),
            attention_resolutions=tuple(model.attention_resolutions), num_heads=model.num_heads,
            num_head_channels=model.num_head_channels, dropout=model.dropout,
        )  # fmt: skip
        try:
            spec.check()
        except ValueError as err:
            raise ConfigError(file, "model", f"{err} (dataset '{config.dataset.name}': samples of shape {shape})") from None
        count = spec.parameter_count()
    limit = config.limits.max_parameters
    if count > limit:
        raise ConfigError(
            file, "model", f"{model.kind} of {count:,} parameters exceeds limits.max_parameters = {limit:,} (about "
            f"{16 * count / 2**30:.0f} GiB to train in fp32 with Adam); shrink it, or raise the limit with a "
            f"top-level `limits: {{max_parameters: {count}}}` if you mean it",
        )


def _check_fault_injection(file: str | Path, config: SweepConfig) -> None:
    if config.fault_injection is None:
        return
    from orchestrator.plan import plan_sweep

    ids = {key.trial_id for key in plan_sweep(config).trainings}
    unknown = [t for t in config.fault_injection.trials if t not in ids]
    if unknown:
        some = sorted(ids)[:10]
        more = f" and {len(ids) - len(some)} more" if len(ids) > len(some) else ""
        raise ConfigError(file, "fault_injection.trials", f"{unknown} are not trials of this sweep: {some}{more}")


def parse_sweep(data: Any, file: str | Path = "<sweep>", base: Path | None = None) -> SweepConfig:
    """Validate an already-loaded mapping (what YAML gave) into a SweepConfig; `${VAR}` in path fields is
    expanded from the environment (and recorded in `written_as`)."""
    if not isinstance(data, dict):
        raise ConfigError(file, "", f"expected a mapping of keys at the top level, got {type(data).__name__}")
    _check_tree_size(file, data)
    if "written_as" in data:
        raise ConfigError(file, "written_as", "unknown key 'written_as' (fmx records it itself)")
    data, written_as = _expand_paths(file, data)
    try:
        config = SweepConfig.model_validate({**data, "written_as": written_as})
    except ValidationError as err:
        raise _first_error(file, err) from None
    _check_dataset(file, config.dataset, base or Path.cwd())
    _check_storage_path(file, config)
    _check_grid_keys(file, config.grid)
    _check_train_axes(file, config)
    _check_guidance(file, config)
    _check_batch(file, config.train)
    _check_combinations(file, config)
    _check_size(file, config)
    _check_model_fits(file, config)
    _check_fault_injection(file, config)
    return config


def load_sweep(file: str | Path) -> SweepConfig:
    """Read and validate a sweep YAML file; every problem is a ConfigError naming the file and key."""
    text = _read_sweep_text(file)
    try:
        # _SweepLoader is PyYAML's SafeLoader (C or Python) plus two checks: it builds only plain scalars, lists
        # and mappings, never Python objects (`!!python/...` tags are refused), so a sweep file from shared
        # storage cannot run code. Alias bombs are refused after this by counting the expanded tree's size.
        data = yaml.load(text, Loader=_SweepLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(file, "", f"malformed YAML: {_yaml_problem(err)}") from None
    return parse_sweep(data, file)


def local_capacity_problem(config: SweepConfig, file: str | Path = "<sweep>", extra_cpus: float = 0.0,
                           cpus: int | None = None) -> ConfigError | None:
    """On a local Ray, a trial asking for more CPUs than this machine has waits forever (Tune never fails
    it): the problem, or None. `extra_cpus` is what a trial holds beside its workers; a cluster's own
    resources can only be checked once connected."""
    have = cpus or os.cpu_count() or 1
    train = config.train
    workers = train.num_workers if train.uses_torch_trainer else 1
    need = workers * train.cpus_per_worker + extra_cpus
    if need <= have:
        return None
    if workers == 1:
        return ConfigError(file, "train.cpus_per_worker", f"{need:g} CPUs per trial, but this machine has {have}")
    return ConfigError(
        file, "train.num_workers",
        f"{workers} workers x {train.cpus_per_worker:g} train.cpus_per_worker = {need:g} CPUs per trial, but this "
        f"machine has {have}",
    )


# --------------------------------------------------------------------------------------------
# Reading the file
# --------------------------------------------------------------------------------------------


def _read_sweep_text(file: str | Path) -> str:
    """The file's text, or a ConfigError for what is not a small UTF-8 regular file. A FIFO is never read
    (it would block until some writer came); the file is opened non-blocking in case one took its place."""
    _check_file_kind(file, _os_call(file, os.stat))
    with os.fdopen(_os_call(file, lambda f: os.open(f, os.O_RDONLY | os.O_NONBLOCK)), "rb") as f:
        _check_file_kind(file, os.fstat(f.fileno()))
        raw = f.read(MAX_FILE_BYTES + 1)
    return _decode(file, raw)


def _os_call(file: str | Path, call: Callable[[str | Path], Any]) -> Any:
    """call(file), its OSError worded for the user."""
    try:
        return call(file)
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the name
        raise ConfigError(file, "", "sweep file not found") from None
    except OSError as err:
        raise ConfigError(file, "", f"cannot read the sweep file: {err.strerror}") from None


def _check_file_kind(file: str | Path, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(file, "", "is a directory, not a sweep file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(file, "", "is not a regular file (a FIFO, device or socket); give a YAML file")
    if info.st_size > MAX_FILE_BYTES:
        raise ConfigError(file, "", f"is {info.st_size} bytes; a sweep file is at most {MAX_FILE_BYTES // 1024} KiB")


def _decode(file: str | Path, raw: bytes) -> str:
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(file, "", f"is over {MAX_FILE_BYTES // 1024} KiB; a sweep file is far smaller")
    if b"\0" in raw:
        raise ConfigError(file, "", "is a binary file (it contains NUL bytes), not YAML text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            file, "", f"is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); save it as UTF-8"
        ) from None


_FLOAT_WITHOUT_DOT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _SweepLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML with two fixes of YAML 1.1 as PyYAML reads it: `1e-5` is a number (YAML 1.2; PyYAML makes
    it a string), and a key written twice in one mapping is an error instead of the last one silently winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key_node.value}' is written twice (lines {lines[key_node.value]} and {line})",
                    key_node.start_mark,
                )
            lines[key_node.value] = line
        return super().construct_mapping(node, deep=deep)


_SweepLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_WITHOUT_DOT, list("-+0123456789."))


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line: where (line, column) and what."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    if isinstance(err, yaml.reader.ReaderError):
        return f"position {err.position}: unacceptable character #x{err.character:04x}: {err.reason}"
    problem = getattr(err, "problem", None) or str(err)
    return where + " ".join(str(problem).split())


def _check_tree_size(file: str | Path, data: Any) -> None:
    """Refuse a file whose values, counting each YAML *alias as a copy of its &anchor, exceed MAX_NODES,
    or that contains itself: counted over shared nodes once (memoised), never expanded."""
    sizes: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, children_done = stack.pop()
        children = list(node.values()) if isinstance(node, dict) else node
        if children_done:
            sizes[id(node)] = 1 + sum(sizes[id(c)] if isinstance(c, (dict, list)) else 1 for c in children)
            if sizes[id(node)] > MAX_NODES:
                raise ConfigError(
                    file, "", f"holds more than {MAX_NODES:,} values once YAML aliases (*name) are expanded; "
                    "a sweep file needs a few hundred (is it an alias bomb?)",
                )
            continue
        if id(node) in sizes:
            continue
        if id(node) in entered:
            raise ConfigError(file, "", "a YAML alias (*name) refers to a value that contains it; that never ends")
        entered.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list)) and id(c) not in sizes)


# --------------------------------------------------------------------------------------------
# ${VAR} in path fields
# --------------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand_paths(file: str | Path, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """`${VAR}` from the environment in path-typed values only (storage_path and the dataset's folder
    options: data roots differ per machine); elsewhere it stays literal text. Returns the expanded copy and
    {dotted key: the text as written} for each value that was expanded."""
    data = dict(data)
    holders: list[tuple[str, dict[str, Any], str]] = [("storage_path", data, "storage_path")]
    dataset = data.get("dataset")
    name = dataset.get("name") if isinstance(dataset, dict) else None
    if isinstance(name, str) and name in DATASET_SPECS:
        data["dataset"] = dataset = dict(dataset)  # type: ignore[arg-type]
        holders += [(f"dataset.{opt}", dataset, opt) for opt in DATASET_SPECS[name].path_options]
    written_as: dict[str, str] = {}
    for key, holder, field in holders:
        text = holder.get(field)
        if isinstance(text, str) and "$" in text:
            holder[field] = _expand_vars(file, key, text)
            written_as[key] = text
    return data, written_as


def _expand_vars(file: str | Path, key: str, text: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if not _VAR_NAME.fullmatch(name):
            raise ConfigError(file, key, f"'${{{name}}}' in '{text}' is not an environment variable name")
        if name not in os.environ:
            raise ConfigError(file, key, f"environment variable {name} is not set (used in '{text}')")
        return os.environ[name]

    expanded = _VAR.sub(value, text)
    if "${" in _VAR.sub("", text):
        raise ConfigError(file, key, f"'${{' without a closing '}}' in '{text}'")
    return expanded
