"""One training configuration: build it, train it (resumably), evaluate it under every solver setting.

Deliberately free of Ray and MLflow so that `fmx train` / `fmx eval` run it in-process and the Ray
layers stay thin wrappers around it.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fm_core.data import Dataset, ImageDataset, make_dataset
from fm_core.guidance import drop_labels, guided, sampling_labels
from fm_core.likelihood import LikelihoodResult, auto_divergence, bits_per_dim_from_draws, log_likelihood, uniform_dequantize
from fm_core.dataset_specs import DATASET_SPECS
from fm_core.metrics import ode_solution_error, sample_metric
from fm_core.models.mlp import MLP
from fm_core.models.unet import UNet
from fm_core.names import time_sampling_of
from fm_core.objectives import Objective, make_objective
from fm_core.time_sampling import make_time_sampler
from fm_core.paths import AffinePath, make_path
from fm_core.precision import Precision
from fm_core.sampling import sample
from fm_core.training import NonFiniteLossError, StepStats, make_ema, make_optimizer, train_step
from orchestrator.schema import ModelConfig, SweepConfig
from fm_core.solvers import SolverSetting
from orchestrator.plan import TrainingKey
from orchestrator.records import RECORD_FILE, read_record, trial_identity, write_record
from orchestrator.rows import PER_SAMPLE_SOLVER, SHARED, EvalRow

STATE_FILE = "state.pt"


class CheckpointError(ValueError):
    """A checkpoint that is not fmx's, is of another trial, or holds more than tensors and plain data."""


def load_state_file(path: Path, device: str = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True: a pickle that would build any other object (and so could run
    code) is refused with a one-line reason instead of being executed."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is advice around one line that names what the pickle asked for.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[-1] if lines else "")
        raise CheckpointError(f"{path}: refused to load: it holds more than tensors and plain data ({reason})") from None
    except (OSError, EOFError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None


TRAJECTORY_POINTS = 6  # states kept along the reference solve of 2-D data (t = 0, 0.2, ..., 1)


def build_model(model: ModelConfig, dataset: Dataset, num_classes: int = 0) -> nn.Module:
    """The sweep's network for this dataset's shape (class-conditional with `num_classes` > 0)."""
    if model.kind == "mlp":
        return MLP(dim=dataset.dim, hidden=model.hidden, depth=model.depth, num_classes=num_classes)
    channels, size = dataset.shape[0], dataset.shape[-1]
    return UNet(
        in_channels=channels,
        image_size=size,
        model_channels=model.model_channels,
        num_res_blocks=model.num_res_blocks,
        channel_mult=tuple(model.channel_mult),
        attention_resolutions=tuple(model.attention_resolutions),
        num_heads=model.num_heads,
        num_head_channels=model.num_head_channels,
        dropout=model.dropout,
        num_classes=num_classes,
    )


class CompiledOrEager(nn.Module):
    """torch.compile(net), which compiles at its first call; if that (or a recompilation) fails, one line says
    why and, with `fallback`, training goes on with `net` itself (else the error ends the trial)."""

    def __init__(self, net: nn.Module, fallback: bool) -> None:
        super().__init__()
        self.net, self.fallback = net, fallback
        self.compiled: Any = torch.compile(net)
        self.failed: str | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # torch._dynamo / inductor errors: many types, one outcome
                self.failed = f"{type(err).__name__}: {err}".strip().splitlines()[0][:300]
                if not self.fallback:
                    raise RuntimeError(f"torch.compile failed ({self.failed}); train.compile_fallback is false") from None
                print(f"fmx: torch.compile failed ({self.failed}); training uncompiled", file=sys.stderr, flush=True)
        return self.net(*args, **kwargs)

    def no_sync(self) -> Any:  # gradient accumulation defers a DDP net's all-reduce; nothing to defer otherwise
        return self.net.no_sync() if hasattr(self.net, "no_sync") else contextlib.nullcontext()


def device_name(device: str) -> str:
    """What trained: `cpu`, or the GPU's product name (`NVIDIA H200`)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return torch.device(device).type


def build_path(key: TrainingKey, config: SweepConfig) -> AffinePath:
    return make_path(key.path, **config.train.path_options_for(key.path))


@dataclass
class TrialRunner:
    """Model, optimizer and data of one training configuration, with a resumable step counter."""

    config: SweepConfig
    key: TrainingKey
    device: str = "cpu"
    dataset: Dataset = field(init=False)
    path: AffinePath = field(init=False)
    objective: Objective = field(init=False)
    model: nn.Module = field(init=False)
    step: int = field(init=False, default=0)
    losses: list[tuple[int, float]] = field(init=False, default_factory=list)
    train_seconds: float = field(init=False, default=0.0)
    eval_seconds: float = field(init=False, default=0.0)
    rows: list[EvalRow] = field(init=False, default_factory=list)
    # (times, states of shape (T, N, 2)) of the last evaluation's reference solve; 2-D data only.
    trajectory: tuple[list[float], Tensor] | None = field(init=False, default=None)
    poison_from: int | None = field(init=False, default=None)  # fault injection: NaN batches from this step
    ema: torch.optim.swa_utils.AveragedModel | None = field(init=False, default=None)
    precision: Precision = field(init=False, default_factory=Precision)
    sampling_precision: Precision = field(init=False, default_factory=Precision)
    _compiled: tuple[nn.Module, nn.Module] | None = field(init=False, default=None, repr=False)
    trained_on: str | None = field(init=False, default=None)  # the device's name (record.json: "device")

    def __post_init__(self) -> None:
        self.config = self.config.for_training(self.key)  # with the key's grid.train values
        self.dataset = make_dataset(self.config.dataset.name, **self.config.dataset.options)
        if isinstance(self.dataset, ImageDataset):  # uint8 on the training device, converted per batch there
            self.dataset.to_device(self.device)
        self.path = build_path(self.key, self.config)
        times = self.config.train.time_sampling
        sampler = make_time_sampler(time_sampling_of(self.key.objective, times.kind), **times.options)
        self.objective = make_objective(self.key.objective, self.path, sampler)
        torch.manual_seed(self.key.seed)
        self.num_classes = self._num_classes()
        self.model = build_model(self.config.model, self.dataset, self.num_classes).to(self.device)
        train = self.config.train
        self.optimizer, self.scheduler = make_optimizer(
            self.model, train.lr, train.lr_schedule, train.warmup_steps, train.steps
        )
        self.generator = torch.Generator().manual_seed(self.key.seed)
        self.ema = make_ema(self.model, train.ema_decay, train.ema_warmup) if train.ema_decay is not None else None
        device_type = torch.device(self.device).type
        self.precision = Precision(train.precision, device_type)
        self.sampling_precision = Precision(self.config.eval.precision, device_type)
        faults = self.config.fault_injection
        self.poison_from = faults.nan_at_step if faults is not None and self.key.trial_id in faults.trials else None

    def _num_classes(self) -> int:
        """The classes of a class-conditional training (train.label_dropout), 0 for an unconditional one."""
        if self.config.train.label_dropout is None:
            return 0
        classes = getattr(self.dataset, "num_classes", None)
        if not classes:
            raise ValueError(f"train.label_dropout: dataset '{self.dataset.name}' gives no class labels here "
                             "(an image folder needs one subfolder per class)")  # fmt: skip
        return int(classes)

    # --- checkpoints ---------------------------------------------------------------------------
    # state.pt holds tensors and plain containers only, loaded with weights_only=True: a checkpoint is data,
    # never code (Ray restores trials from files on shared storage, `fmx eval` from any folder it is given).
    # record.json holds what the driver must read without PyTorch: rows, the loss curve, the step.

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "step": self.step,
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            **({"grad_scaler": self.precision.state_dict()} if self.precision.scaler is not None else {}),
        }

    def record(self) -> dict[str, Any]:
        """The checkpoint's JSON side: enough for the driver to finish this trial's record on its own."""
        return {
            "trial_id": self.key.trial_id,
            "sweep": self.config.name,
            "step": self.step,
            "losses": self.losses,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "rows": [row.as_dict() for row in self.rows],
            "device": self.trained_on,
        }

    def load_state_dict(self, state: dict[str, Any], record: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.precision.scaler is not None:
            self.precision.load_state_dict(state["grad_scaler"])
        self.step = int(state["step"])
        self.losses = [(int(s), float(v)) for s, v in record.get("losses", [])]
        self.train_seconds = float(record.get("train_seconds", 0.0))
        self.eval_seconds = float(record.get("eval_seconds", 0.0))
        self.rows = [EvalRow.from_dict(row) for row in record.get("rows", [])]
        self.trained_on = record.get("device") or self.trained_on

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), directory / STATE_FILE)
        write_record(directory, self.record())
        return directory

    def restore(self, directory: str | Path) -> None:
        """Load a checkpoint folder; raises CheckpointError if it is not one this trial may load."""
        directory = Path(directory)
        state = load_state_file(directory / STATE_FILE, self.device)
        record = read_record(directory)
        if record is None and "rows" in state:  # written before record.json existed: all in state.pt
            record = state
        if record is None:
            raise CheckpointError(f"{directory}: no readable {RECORD_FILE} beside {STATE_FILE}")
        if record.get("trial_id") not in (None, self.key.trial_id):
            raise CheckpointError(
                f"{directory}: the checkpoint is of trial '{record['trial_id']}', not '{self.key.trial_id}'"
            )
        try:
            self.load_state_dict(state, record)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as err:
            # A model of other shapes (sweep.yaml edited since), a missing or mistyped entry: never a traceback.
            what = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise CheckpointError(
                f"{directory}: the checkpoint does not fit this trial's model and optimizer ({type(err).__name__}: {what});"
                " was its sweep.yaml changed after training?"
            ) from None

    def save_weights(self, directory: str | Path) -> Path:
        """The weights an evaluation reads (the model and its EMA) at this step, without the optimizer: what a
        later pass needs to evaluate new solver settings of this checkpoint without retraining."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {"model": self.model.state_dict(), "step": self.step, **({"ema": self.ema.state_dict()} if self.ema is not None else {})}
        torch.save(state, directory / STATE_FILE)
        write_record(directory, {"trial_id": self.key.trial_id, "step": self.step, "weights_only": True})
        return directory

    def restore_weights(self, directory: str | Path) -> None:
        """Load a `save_weights` folder (CheckpointError if it is not of this trial or does not fit its model)."""
        directory = Path(directory)
        state = load_state_file(directory / STATE_FILE, self.device)
        record = read_record(directory) or {}
        if record.get("trial_id") != self.key.trial_id:
            raise CheckpointError(f"{directory}: the weights are of trial '{record.get('trial_id')}', not '{self.key.trial_id}'")
        try:
            self.model.load_state_dict(state["model"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            self.step = int(state["step"])
        except (RuntimeError, KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"{directory}: the weights do not fit this trial's model ({type(err).__name__})") from None

    # --- training ------------------------------------------------------------------------------

    def train_until(
        self,
        stop_step: int,
        train_model: nn.Module | None = None,
        batch_size: int | None = None,
        on_log: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        """Train from the current step to `stop_step` (train_model may be a DDP wrapper of self.model).
        Every `train.log_every` steps (and at `stop_step`) the loss joins the curve and `on_log(step, values)`
        gets what a live view shows: loss, learning rate, gradient norm, steps/s, examples/s (and the peak
        memory on a GPU)."""
        cfg = self.config.train
        net = self._training_net(train_model if train_model is not None else self.model)
        batch = batch_size or cfg.worker_batch
        net.train()
        self.trained_on = device_name(self.device)
        start = time.perf_counter()
        since, since_step = start, self.step
        try:
            while self.step < stop_step:
                x1, labels = self.next_batch(batch)
                x1 = x1.to(self.device)  # a no-op for image data, already there
                logs = (self.step + 1) % cfg.log_every == 0 or self.step + 1 == stop_step
                stats = train_step(net, self.objective, self.optimizer, x1, self.key.coupling, self.generator,
                                         cfg.grad_clip, measure_grad_norm=logs and on_log is not None,
                                         precision=self.precision, accumulation=cfg.grad_accum, labels=labels)  # fmt: skip
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                lr = self.scheduler.get_last_lr()[0]
                self.scheduler.step()
                self.step += 1
                if logs:
                    self.losses.append((self.step, stats.loss))
                    if on_log is not None:
                        now = time.perf_counter()
                        on_log(self.step, self._live_values(stats, lr, self.step - since_step, now - since, batch))
                        since, since_step = now, self.step
        except NonFiniteLossError as err:
            raise NonFiniteLossError(f"loss became non-finite at step {self.step + 1}: {err}") from None
        finally:
            self.train_seconds += time.perf_counter() - start
            self.model.eval()

    def _live_values(self, stats: StepStats, lr: float, steps: int, seconds: float, batch: int) -> dict[str, float]:
        values = {"train_loss": stats.loss, "lr": lr}
        if stats.grad_norm is not None:
            values["grad_norm"] = stats.grad_norm
        if seconds > 0:
            values.update(steps_per_second=steps / seconds, examples_per_second=steps * batch / seconds)
        if self.device.startswith("cuda"):
            values["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return values

    def _training_net(self, net: nn.Module) -> nn.Module:
        """`net`, compiled once with torch.compile when the sweep asks (the compiled module shares its weights)."""
        if not self.config.train.compile:
            return net
        if self._compiled is None or self._compiled[0] is not net:
            self._compiled = (net, CompiledOrEager(net, fallback=self.config.train.compile_fallback))
        return self._compiled[1]

    @property
    def evaluated_model(self) -> nn.Module:
        """The EMA of the weights when the sweep keeps one (what diffusion and FM papers evaluate), else the model."""
        return self.ema.module if self.ema is not None else self.model

    def next_batch(self, size: int) -> tuple[Tensor, Tensor | None]:
        """A training batch and, for a class-conditional training, its labels with each dropped to the null
        class with train.label_dropout (fault injection, where the sweep asks for it, poisons the batch from
        its step on)."""
        labels = None
        if self.num_classes:
            x1, labels = self.dataset.sample_with_labels(size, self.generator)  # type: ignore[attr-defined]
            labels = drop_labels(labels, float(self.config.train.label_dropout), self.num_classes, self.generator)
        else:
            x1 = self.dataset.sample(size, self.generator)
        poisoned = self.poison_from is not None and self.step + 1 >= self.poison_from
        return (x1 * math.nan if poisoned else x1), labels

    # --- evaluation ----------------------------------------------------------------------------

    def evaluate(
        self, settings: list[SolverSetting], on_row: Callable[[int, EvalRow], None] | None = None
    ) -> tuple[list[EvalRow], dict[str, Tensor]]:
        """Rows for every setting at the current step, and the samples drawn (by setting label).

        `on_row(i, row)` is called as each setting finishes: long evaluations report progress through it."""
        start = time.perf_counter()
        try:
            return self._evaluate(settings, on_row)
        finally:
            self.eval_seconds += time.perf_counter() - start

    @property
    def compute_seconds(self) -> float:
        """The trial's own work (training + every evaluation), against which orchestration overhead is judged."""
        return self.train_seconds + self.eval_seconds

    def _evaluate(
        self, settings: list[SolverSetting], on_row: Callable[[int, EvalRow], None] | None
    ) -> tuple[list[EvalRow], dict[str, Tensor]]:
        cfg = self.config.eval
        evaluated = self.evaluated_model
        evaluated.eval()
        field_fn = self.objective.vector_field(evaluated)
        t_span = (0.0, self.path.t_max)
        g = torch.Generator().manual_seed(cfg.seed)
        noise = torch.randn((cfg.samples, *self.dataset.shape), generator=g) * self.path.prior_std
        noise = noise.to(self.device)
        is_image = isinstance(self.dataset, ImageDataset)
        reference_data = self.dataset.reference(cfg.samples, seed=cfg.seed)
        # A class-conditional model samples balanced, fixed classes (like the noise) under each setting's
        # guidance scale; its likelihood is the unconditional model's (the null label: `field_fn`).
        labels = sampling_labels(len(noise), self.num_classes, self.device) if self.num_classes else None

        def field_of(scale: float | None, rows: slice) -> Callable[[Tensor, Tensor], Tensor]:
            if scale is None or labels is None:
                return field_fn
            return self.objective.vector_field(guided(evaluated, labels[rows], scale, self.num_classes))

        references: dict[float | None, Tensor | None] = {}

        def ode_reference(scale: float | None) -> Tensor | None:
            """The reference solve of the field a setting integrates (one per guidance scale)."""
            if scale not in references:
                references[scale] = self._reference_solve(lambda rows: field_of(scale, rows), noise, t_span, is_image)
            return references[scale]

        ode_reference(settings[0].cfg_scale if settings else None)  # before any setting: as it always was
        metric_name = DATASET_SPECS[self.dataset.name].sample_metric  # what the dataset says it is judged by
        likelihood = _Likelihood(self, field_fn, is_image)
        shared = cfg.likelihood.setting()
        shared_nll = likelihood.measure(shared, SHARED) if shared is not None else None  # once per checkpoint
        identity = trial_identity(self.config, self.key)

        rows: list[EvalRow] = []
        samples: dict[str, Tensor] = {}
        for index, setting in enumerate(settings):
            start = time.perf_counter()
            try:
                with torch.no_grad(), self.sampling_precision.autocast():
                    x, nfe = self._solve_in_batches(
                        lambda chunk, rows: sample(field_of(setting.cfg_scale, rows), chunk, setting, t_span), noise
                    )
                x = x.float()
                x = x.detach().cpu()
                if not bool(torch.isfinite(x).all()):
                    raise FloatingPointError("the ODE solution has non-finite values")
                samples[setting.label] = x
                metric = math.nan if metric_name is None else sample_metric(metric_name, x, reference_data)
                nll = shared_nll if shared_nll is not None else likelihood.measure(setting, PER_SAMPLE_SOLVER)
                reference = ode_reference(setting.cfg_scale)
                error = math.nan if reference is None else ode_solution_error(x, reference)
                seconds = time.perf_counter() - start
                for draws, value in nll.values:  # one row per dequantization K (a single row for vectors)
                    rows.append(
                        EvalRow.of(
                            setting, self.step, **identity, nfe=nfe, nll=value, dequant_draws=draws, **nll.protocol,
                            sample_metric=metric, sample_metric_name=metric_name, ode_error=error, eval_seconds=seconds,
                            error=nll.error,
                        )
                    )  # fmt: skip
            except Exception as err:  # one bad setting must not lose the others
                reason = f"{type(err).__name__}: {err}".splitlines()[0]
                seconds = time.perf_counter() - start
                rows.append(EvalRow.of(setting, self.step, **identity, status="failed", error=reason, eval_seconds=seconds))
            if on_row is not None:
                on_row(index, rows[-1])
        return rows, samples

    def _reference_solve(
        self, field_of: Callable[[slice], Callable[[Tensor, Tensor], Tensor]], noise: Tensor, t_span: tuple[float, float],
        is_image: bool,
    ) -> Tensor | None:  # fmt: skip
        """The dopri5 solve at eval.reference_tol from the same noise that ode_error is measured against; for
        2-D data it also keeps a few intermediate states (the density-over-t plot) in self.trajectory."""
        self.trajectory = None
        tol = self.config.eval.reference_tol
        if tol is None:
            return None
        times = None
        if self.dataset.dim == 2 and not is_image:
            times = [t_span[0] + (t_span[1] - t_span[0]) * i / (TRAJECTORY_POINTS - 1) for i in range(TRAJECTORY_POINTS)]
            times[-1] = t_span[1]
        reference = SolverSetting.adaptive("dopri5", tol)
        with torch.no_grad():
            states, _ = self._solve_in_batches(
                lambda chunk, rows: sample(field_of(rows), chunk, reference, t_span, times),
                noise,
                lambda sol: sol.x.unsqueeze(1) if sol.trajectory is None else sol.trajectory.transpose(0, 1),
            )
        self.trajectory = None if times is None else (times, states.transpose(0, 1).detach().cpu())
        return states[:, -1].cpu()

    def _solve_in_batches(
        self, solve: Callable[[Tensor, slice], Any], inputs: Tensor, value: Callable[[Any], Tensor] = lambda r: r.x
    ) -> tuple[Tensor, int]:
        """Run `solve(chunk, rows)` on chunks of at most eval.batch_size points (bounding GPU memory on big
        evaluations; `rows` says which, so that each point keeps its class label); returns the concatenated
        values and the NFE of one solve (the mean over chunks, rounded)."""
        size = self.config.eval.batch_size or len(inputs)
        results = [solve(inputs[i : i + size], slice(i, i + size)) for i in range(0, len(inputs), size)]
        nfe = round(sum(r.nfe for r in results) / len(results))
        return torch.cat([value(r) for r in results]), nfe


@dataclass
class Likelihoods:
    """A checkpoint's mean NLL of held-out data (one value per dequantization K) and how it was measured."""

    values: list[tuple[int | None, float]]
    protocol: dict[str, Any]
    error: str | None = None


class _Likelihood:
    """Integrates the log-likelihood of held-out data under one solver setting: nats for vectors, bits/dim for
    8-bit images (every K from the same max(K) dequantized draws, in one batched solve)."""

    def __init__(self, runner: TrialRunner, field_fn: Callable[[Tensor, Tensor], Tensor], is_image: bool) -> None:
        self.runner, self.field_fn, self.is_image = runner, field_fn, is_image
        cfg = runner.config.eval
        self.divergence = cfg.divergence if cfg.divergence != "auto" else auto_divergence(runner.dataset.dim)

    def measure(self, setting: SolverSetting, protocol: str) -> Likelihoods:
        cfg = self.runner.config.eval
        draws: list[int | None] = list(cfg.dequant_draws) if self.is_image else [None]
        if cfg.likelihood_points == 0:
            return Likelihoods([(None, math.nan)], {})
        meta = {
            "nll_unit": "bits/dim" if self.is_image else "nats", "nll_protocol": protocol, "nll_solver": setting.label,
            "nll_divergence": self.divergence, "nll_probe": cfg.probe if self.divergence == "hutchinson" else None,
            "nll_points": cfg.likelihood_points,
        }  # fmt: skip
        try:
            values, nfe = self._integrate(setting)
        except Exception as err:  # the samples' rows stand without it; say why it is missing
            reason = f"likelihood: {type(err).__name__}: {err}".splitlines()[0]
            return Likelihoods([(k, math.nan) for k in draws], meta, reason)
        return Likelihoods(values, {**meta, "nll_nfe": nfe})

    def _integrate(self, setting: SolverSetting) -> tuple[list[tuple[int | None, float]], int]:
        runner, cfg = self.runner, self.runner.config.eval
        g = torch.Generator().manual_seed(cfg.seed + 1)

        def log_prob(x: Tensor) -> tuple[Tensor, int]:
            def one(chunk: Tensor, rows: slice) -> LikelihoodResult:
                return log_likelihood(
                    self.field_fn, chunk.to(runner.device), setting, t1=runner.path.t_max, prior_std=runner.path.prior_std,
                    divergence=self.divergence, probe=cfg.probe, generator=g,
                )  # fmt: skip

            values, nfe = runner._solve_in_batches(one, x, lambda r: r.log_prob)
            return values.detach().cpu(), nfe

        if self.is_image:
            dataset = runner.dataset
            assert isinstance(dataset, ImageDataset)
            images = dataset.images_heldout_uint8[dataset.reference_indices(cfg.likelihood_points, cfg.seed)]
            k_max = max(cfg.dequant_draws)
            # All K dequantized copies go through one batched solve: K solves' worth of work at one solve's NFE.
            copies = torch.cat([uniform_dequantize(images, g) for _ in range(k_max)])
            flat, nfe = log_prob(copies)
            draws = flat.reshape(k_max, len(images))
            return [(k, float(bits_per_dim_from_draws(draws[:k], dataset.dim).mean())) for k in cfg.dequant_draws], nfe
        points = runner.dataset.reference(cfg.likelihood_points, seed=cfg.seed + 1)
        values, nfe = log_prob(points)
        if not bool(torch.isfinite(values).all()):
            raise FloatingPointError("non-finite log-likelihoods")
        return [(None, float(-values.mean()))], nfe
