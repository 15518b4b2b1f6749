"""The sweep file's schema: pydantic models of every key, each value bounded.

Each field states what it accepts (a number's range beside it, names from fm_core) and the models check what
one file alone can tell (solver axes against their tolerances and budgets, the model kind for the dataset,
evaluation steps within training: orchestrator.schema_checks, on plain values). Reading the file is
orchestrator.sweep_file; the checks against fm_core's capabilities and the filesystem are
orchestrator.validation; expanding the grid is orchestrator.plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator, model_validator

from fm_core.checks import Range, integers
from fm_core.likelihood import DIVERGENCES, PER_SAMPLE_SOLVER, PROBES
from fm_core.models.spec import MLP_OPTIONS, UNET_OPTIONS
from fm_core.solvers import DEFAULT_TOL, SolverSetting
from fm_core.names import (
    PRECISION_NAMES,
    ADAPTIVE_SOLVERS, COUPLING_NAMES, DATASET_NAMES, OBJECTIVE_NAMES, PATH_NAMES,
    SOLVER_NAMES, TIME_SAMPLING_NAMES,
)  # fmt: skip

from fm_core.couplings import COUPLINGS  # noqa: E402 - torch-free: the couplings' names and options
from fm_core.paths import PATHS  # noqa: E402 - torch-free: the schedules' names, options and capabilities
from fm_core.time_sampling import TIME_SAMPLERS  # noqa: E402 - torch-free too
from fm_core.lazy import option_problem  # noqa: E402
from orchestrator.config_errors import KeyedError  # noqa: E402
from orchestrator.fid_config import FidConfig  # noqa: E402
from orchestrator.schema_checks import check_eval_steps, check_model_kind, check_pairs, check_solver_axes  # noqa: E402
from orchestrator.value_types import (
    DISTINCT, MAX_BATCH, MAX_STEPS, NON_EMPTY, Batch, Count, Nfe, OpenFraction, Seed, Tolerance, head_channels, in_range,
)  # fmt: skip

# The names fm_core defines, as Literal types: pydantic reads them (and its errors list them); a type checker
# cannot read a Literal of names computed at import, so to it they are strings.
if TYPE_CHECKING:
    DatasetName = PathName = ObjectiveName = CouplingName = SolverName = TimeSamplingName = Precision = str
    LikelihoodSolver = Divergence = Probe = str
else:
    DatasetName = Literal[DATASET_NAMES]
    PathName = Literal[PATH_NAMES]
    ObjectiveName = Literal[OBJECTIVE_NAMES]
    CouplingName = Literal[COUPLING_NAMES]
    SolverName = Literal[SOLVER_NAMES]
    TimeSamplingName = Literal[TIME_SAMPLING_NAMES]
    Precision = Literal[PRECISION_NAMES]
    LikelihoodSolver = Literal[(*SOLVER_NAMES, PER_SAMPLE_SOLVER)]
    Divergence = Literal[("auto", *DIVERGENCES)]
    Probe = Literal[PROBES]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    """`name` plus the dataset's own options (gmm: means/stds/weights; folders: root; ...)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: DatasetName

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelConfig(_Strict):
    """The network: `mlp` (hidden, depth) or `unet` (ADM-style, sizes as in the paper's Table 3)."""

    kind: Literal["mlp", "unet"] = "mlp"
    hidden: Annotated[int, in_range(integers(1, 8192))] = 512
    depth: Annotated[int, in_range(integers(1, 64))] = 5
    model_channels: Annotated[int, in_range(integers(1, 1024))] = 32
    num_res_blocks: Annotated[int, in_range(integers(1, 16))] = 1
    channel_mult: tuple[Annotated[int, in_range(integers(1, 16))], ...] = Field((1, 2), min_length=1, max_length=8)
    attention_resolutions: Annotated[tuple[Annotated[int, in_range(integers(1, 1024))], ...], DISTINCT] = (4,)
    num_heads: Annotated[int, in_range(integers(1, 64))] = 2
    num_head_channels: Annotated[int, BeforeValidator(head_channels)] = Field(
        -1, description="-1: num_heads heads; else channels per head (the paper's CIFAR-10 U-Net: 64)"
    )
    dropout: Annotated[float, in_range(Range(0.0, 1.0, hi_open=True))] = 0.0

    @property
    def options(self) -> dict[str, Any]:
        """The settings its kind reads, as the network's constructor takes them (fm_core.models.spec); the
        others are ignored by it, and not logged on its runs."""
        return {name: getattr(self, name) for name in MODEL_FIELDS[self.kind]}

    @property
    def applied(self) -> dict[str, Any]:
        """`kind` and its options: what a run shows of its model and what its training cell hashes."""
        return {"kind": self.kind, **self.options}


#: The model.* fields each kind reads.
MODEL_FIELDS: dict[str, tuple[str, ...]] = {"mlp": MLP_OPTIONS, "unet": UNET_OPTIONS}


class TimeSamplingConfig(_Strict):
    """How training draws t: `kind` (fm_core.time_sampling; null: each objective's own, uniform but for
    scoreflow's likelihood weighting) and that kind's options (logit_normal: loc, scale)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: TimeSamplingName | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _options_of_the_kind(self) -> TimeSamplingConfig:
        if self.kind is None and self.options:
            raise KeyedError("train.time_sampling", f"options {', '.join(self.options)} need a kind")
        problem = option_problem(TIME_SAMPLERS[self.kind], self.options, f"time sampling '{self.kind}'") if self.kind else None
        if problem:
            name, message = problem
            raise KeyedError("train.time_sampling" + (f".{name}" if name else ""), message)
        return self


def _options_problem(value: dict[str, dict[str, float]], classes: dict[str, type], what: str) -> dict[str, dict[str, float]]:
    """`value` ({name: {option: number}}) where every name is one of `classes` and builds it; else a KeyedError
    at `train.<what>_options.<name>[.<option>]` saying why."""
    for name, options in value.items():
        key = f"train.{what}_options.{name}"
        if name not in classes:
            raise KeyedError(key, f"unknown {what} '{name}'; choose one of {', '.join(classes)}")
        problem = option_problem(classes[name], options, f"{what} '{name}'")
        if problem:
            option, message = problem
            raise KeyedError(key + (f".{option}" if option else ""), message)
    return value


class TrainConfig(_Strict):
    """Optimisation and Ray Train scaling for every training trial of the sweep."""

    steps: Count
    batch_size: Batch
    lr: OpenFraction = 1e-3
    lr_schedule: Literal["constant", "poly"] = "constant"
    warmup_steps: Annotated[int, in_range(integers(0, MAX_STEPS))] = 0
    grad_clip: Annotated[float, in_range(Range(0.0, 1e6, lo_open=True))] | None = None
    ema_decay: OpenFraction | None = Field(
        None, description="EMA of the weights (e.g. 0.9999); evaluations then use the average. null: off"
    )
    ema_warmup: StrictBool = Field(True, description="decay min(ema_decay, (1+n)/(10+n)) at the n-th update")
    precision: Precision = Field(
        "fp32", description="autocast dtype of training (fp16 with a gradient scaler); likelihoods stay fp32"
    )
    compile: StrictBool = Field(False, description="torch.compile the model for training (not for evaluation)")
    compile_fallback: StrictBool = Field(
        True, description="where compilation fails, say so in one line and train uncompiled (false: the trial fails)"
    )
    checkpoint_every: Count = 500
    log_every: Count = 50
    num_workers: Annotated[int, in_range(integers(1, 1024))] = 1
    grad_accum: Annotated[int, in_range(integers(1, 1024))] = Field(
        1, description="micro-batches per optimizer step: batch_size stays the global batch with fewer workers"
    )
    use_gpu: StrictBool = False
    torch_trainer: StrictBool = Field(
        False, description="train through Ray Train's TorchTrainer even for one CPU worker (else in the Tune trial)"
    )
    # Ray counts resources in units of 1e-4; a trial asking for more than any node has waits forever.
    cpus_per_worker: Annotated[float, in_range(Range(1e-4, 1024.0))] = 1.0
    max_failures: Annotated[int, in_range(integers(0, 100))] = Field(0, description="Tune retries of a failed trial (and Train restarts)")
    sigma_min: Annotated[float, in_range(Range(0.0, 1.0, hi_open=True))] = Field(
        0.0, description="the std left at the data end, for the paths that take it (ot; the paper's 2D runs use ~1e-4)"
    )
    label_dropout: OpenFraction | None = Field(
        None, description="train a class-conditional model, each label dropped to the null class with this "
        "probability (classifier-free guidance; datasets with labels); null: unconditional",
    )
    time_sampling: TimeSamplingConfig = Field(
        TimeSamplingConfig(), description="the distribution of training times: {kind: uniform | logit_normal | likelihood, ...}"
    )
    path_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="each path's schedule options, e.g. {poly: {n: 3}, vp: {beta_max: 20}}"
    )

    coupling_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="each coupling's options, e.g. {sinkhorn: {reg: 0.05}} (fm_core.couplings)"
    )
    coupling_prefetch: StrictBool = Field(
        True, description="pair the next batch on a worker thread while a step trains (minibatch_ot, sinkhorn); "
        "the same pairs as false, which pairs each batch on the training thread",
    )

    @field_validator("path_options")
    @classmethod
    def _path_options_exist(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """Names and values a path accepts, from the path classes themselves (fm_core.paths)."""
        return _options_problem(value, PATHS, "path")

    @field_validator("coupling_options")
    @classmethod
    def _coupling_options_exist(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """Names and values a coupling accepts, from the coupling classes themselves (fm_core.couplings)."""
        return _options_problem(value, COUPLINGS, "coupling")

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


#: Train settings that decide how a training is run, not what it computes: a training's content key
#: (orchestrator.cells) leaves them out, and they cannot be a grid axis (grid.train).
OPERATIONAL_TRAIN_FIELDS = frozenset(
    {"checkpoint_every", "log_every", "use_gpu", "torch_trainer", "cpus_per_worker", "max_failures", "compile", "compile_fallback",
     "coupling_prefetch"}
)


class LikelihoodConfig(_Strict):
    """The likelihood protocol. A likelihood is a property of the model, not of the sampler: the paper integrates
    it once with dopri5 at atol = rtol = 1e-5, and integrating it with an 8-step Euler instead makes a model look
    better than it is. So it is computed once per evaluated checkpoint unless the file asks otherwise."""

    solver: LikelihoodSolver = "dopri5"
    tol: Tolerance | None = None
    nfe: Nfe | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_tol(cls, data: Any) -> Any:
        """An adaptive solver without tol or nfe takes the paper's tolerance."""
        if isinstance(data, dict) and data.get("solver", "dopri5") in ADAPTIVE_SOLVERS and "tol" not in data and "nfe" not in data:
            return {**data, "tol": DEFAULT_TOL}
        return data

    @model_validator(mode="after")
    def _one_setting(self) -> LikelihoodConfig:
        if self.solver == PER_SAMPLE_SOLVER:
            if self.tol is not None or self.nfe is not None:
                raise KeyedError("eval.likelihood", "per_sample_solver takes each sample solver's own tol/nfe: drop tol and nfe")
            return self
        try:
            self.setting()
        except ValueError as err:
            raise KeyedError("eval.likelihood", str(err)) from None
        return self

    @property
    def per_sample_solver(self) -> bool:
        return self.solver == PER_SAMPLE_SOLVER

    def setting(self) -> SolverSetting | None:
        """The one solver setting every row of a checkpoint shares, or None when each sample solver is used."""
        return None if self.per_sample_solver else SolverSetting(self.solver, tol=self.tol, nfe_budget=self.nfe)


class EvalConfig(_Strict):
    """What each trained checkpoint is measured on, under every solver setting."""

    samples: Batch = 2000
    likelihood_points: Annotated[int, in_range(integers(0, MAX_BATCH))] = 500
    divergence: Divergence = "auto"
    probe: Probe = "rademacher"
    dequant_draws: Annotated[tuple[Annotated[int, in_range(integers(1, 1000))], ...], DISTINCT, NON_EMPTY] = Field(
        (1,), description="K for bits/dim; several values give Table 4's ablation"
    )
    reference_tol: Tolerance | None = Field(
        1e-7,
        description="dopri5 tolerance of the reference solve from the same noise that ode_error is measured "
        "against; null skips it (no ode_error, no density over t): on images it costs more than the evaluation",
    )
    likelihood: LikelihoodConfig = Field(
        default_factory=lambda: LikelihoodConfig.model_validate({}),
        description="how NLL / bits per dim is integrated: once per checkpoint with this solver (the paper's "
        "dopri5 at 1e-5), or `solver: per_sample_solver` to integrate it with each sample solver instead",
    )
    batch_size: Batch | None = Field(
        None, description="most points in one ODE solve (sampling and likelihood); unset: all at once"
    )
    at_steps: Annotated[tuple[Count, ...], DISTINCT] = ()
    seed: Seed = 0
    precision: Precision = Field(
        "fp32", description="autocast dtype of sampling (the likelihood is always integrated in fp32)"
    )
    fid: FidConfig | None = Field(None, description="FID by the standard protocol (image datasets; docs/fid.md); null: none")
    per_sample_nfe: Annotated[int, in_range(integers(1, MAX_BATCH))] | None = Field(
        None,
        description="solve the first N samples once more one by one, each under its own step control (adaptive "
        "solvers): rows carry their NFE's mean, median and 90th percentile beside the batch's; null: off",
    )

    @field_validator("dequant_draws", mode="before")
    @classmethod
    def _draws_list(cls, v: Any) -> Any:
        return (v,) if isinstance(v, int) else v

    @field_validator("dequant_draws", "at_steps")
    @classmethod
    def _sorted(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(v))

    @model_validator(mode="after")
    def _per_sample_within_samples(self) -> EvalConfig:
        if self.per_sample_nfe is not None and self.per_sample_nfe > self.samples:
            raise KeyedError("eval.per_sample_nfe", f"{self.per_sample_nfe} samples solved one by one, but eval.samples "
                             f"draws only {self.samples}")  # fmt: skip
        return self


class FaultInjection(_Strict):
    """A deliberate NaN loss in chosen trials: lets users (and fmx's tests) see failure handling work."""

    nan_at_step: Count
    trials: Annotated[tuple[str, ...], DISTINCT, NON_EMPTY] = Field(description="trial ids, e.g. vp-fm-independent-s0")


class GridConfig(_Strict):
    """Lists swept over. Training axes: path, objective, coupling, seed. Evaluation axes: solver, tol, nfe."""

    path: Annotated[tuple[PathName, ...], DISTINCT, NON_EMPTY] = ("ot",)
    objective: Annotated[tuple[ObjectiveName, ...], DISTINCT, NON_EMPTY] = ("fm",)
    coupling: Annotated[tuple[CouplingName, ...], DISTINCT, NON_EMPTY] = ("independent",)
    seed: Annotated[tuple[Seed, ...], DISTINCT, NON_EMPTY] = (0,)
    solver: Annotated[tuple[SolverName, ...], DISTINCT, NON_EMPTY] = ("dopri5",)
    tol: Annotated[tuple[Tolerance, ...], DISTINCT] = ()
    nfe: Annotated[tuple[Nfe, ...], DISTINCT] = ()
    pairs: Annotated[tuple[tuple[str, ...], ...], DISTINCT] | None = Field(
        None,
        description="explicit [path, objective] or [path, objective, coupling] rows instead of the full product",
    )
    cfg_scale: Annotated[tuple[Annotated[float, in_range(Range(0.0, 100.0))], ...], DISTINCT] = Field(
        (), description="classifier-free guidance scales to evaluate (1: the conditional field, 0: the unconditional)"
    )
    train: dict[str, tuple[Any, ...]] | None = Field(
        None, description="training options as axes, each value trained once: {lr: [1e-3, 3e-4], ema_decay: [null, 0.999]}"
    )


class LimitsConfig(_Strict):
    """How big a grid may be before fmx refuses it as a likely mistake; a sweep file may raise them."""

    max_trainings: Annotated[int, in_range(integers(1, 1_000_000))] = 10_000
    max_evaluations: Annotated[int, in_range(integers(1, 100_000_000))] = 1_000_000
    #: ~16 bytes a parameter to train with Adam in fp32 (weights, gradients, two moments): 1e9 is ~16 GB.
    max_parameters: Annotated[int, in_range(integers(1, 10**12))] = 1_000_000_000


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
    max_concurrent_trials: Annotated[int, in_range(integers(1, 10_000))] | None = None
    fault_injection: FaultInjection | None = None
    limits: LimitsConfig = LimitsConfig()
    written_as: dict[str, str] = Field(
        default_factory=dict,
        description="not a key of the file: dotted key -> the text the file wrote where ${VAR} was expanded, "
        "so that logs show '${CIFAR10_ROOT}' rather than the value (which may be private)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        check_solver_axes(self.grid.solver, self.grid.tol, self.grid.nfe)
        check_model_kind(self.dataset.name, self.model.kind)
        if self.train.checkpoint_every > self.train.steps:  # a checkpoint at the end at the latest
            object.__setattr__(self.train, "checkpoint_every", self.train.steps)
        check_eval_steps(self.train.steps, self.eval.at_steps)
        if self.grid.pairs is not None:
            check_pairs(self.grid.pairs, self.grid.coupling)
        return self

    def for_training(self, key: Any) -> SweepConfig:
        """The sweep as one training sees it: `train` with its key's training-option values (grid.train).
        `key` is a plan.TrainingKey (anything with `overrides`, {option: value}); the grid's expansion into
        keys is orchestrator.plan's, this only gives the config a training trains with."""
        overrides = getattr(key, "overrides", None)
        if not overrides:
            return self
        current = self.train.model_dump(mode="json")
        if all(current.get(name) == value for name, value in overrides.items()):
            return self  # already this training's config (a trial's setup): nothing to validate again
        train = TrainConfig.model_validate({**self.train.model_dump(), **overrides})
        return self.model_copy(update={"train": train})
