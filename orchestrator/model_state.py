"""The state of one training configuration: its data, path, objective, model, optimizer, EMA and precision, the
step it reached, and the checkpoint that holds all of it.

Free of Ray and MLflow: `fmx train` / `fmx eval` use it in-process, the Tune routes around it. The trainer
(orchestrator.trainer) and the evaluator (orchestrator.evaluation) both work on one `ModelState`.

A checkpoint is a folder: `state.pt` holds tensors and plain containers only, loaded with weights_only=True
(a checkpoint is data, never code: Ray restores trials from files on shared storage, `fmx eval` from any folder
it is given); `record.json` holds what the driver must read without PyTorch: rows, the loss curve, the step.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fm_core.data import Dataset
from fm_core.datasets import make_dataset
from fm_core.image_data import ImageDataset
from fm_core.models.mlp import MLP
from fm_core.models.unet import UNet
from fm_core.objectives import time_sampling_of
from fm_core.objectives import Objective, make_objective
from fm_core.paths import AffinePath, make_path
from fm_core.precision import Precision
from fm_core.time_sampling import make_time_sampler
from fm_core.training import make_ema, make_optimizer
from orchestrator.schema import ModelConfig, SweepConfig
from orchestrator.plan import TrainingKey
from orchestrator.errors import CheckpointError
from orchestrator.records import RECORD_FILE, STATE_FILE, read_record, write_record
from orchestrator.rows import EvalRow


def trial_device(config: SweepConfig) -> str:
    """Where a training or evaluation outside a Ray Train worker runs: `cuda` where the sweep asks for a GPU
    (train.use_gpu) and PyTorch sees one, else `cpu` (a Ray Train worker is given its device by Ray)."""
    return "cuda" if config.train.use_gpu and torch.cuda.is_available() else "cpu"


def load_state_file(path: Path, device: str = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True: a pickle that would build any other object (and so could run
    code) is refused with a one-line reason instead of being executed."""
    try:
        if Path(path).exists() and not Path(path).is_file():  # a FIFO would block the load for good
            raise CheckpointError(f"{path}: not a regular file (a FIFO, socket or device); remove it")
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is advice around one line that names what the pickle asked for.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[-1] if lines else "")
        raise CheckpointError(f"{path}: refused to load: it holds more than tensors and plain data ({reason})") from None
    except (OSError, EOFError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None


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


def build_path(key: TrainingKey, config: SweepConfig) -> AffinePath:
    return make_path(key.path, **config.train.path_options_for(key.path))


def _num_classes(config: SweepConfig, dataset: Dataset) -> int:
    """The classes of a class-conditional training (train.label_dropout), 0 for an unconditional one."""
    if config.train.label_dropout is None:
        return 0
    classes = getattr(dataset, "num_classes", None)
    if not classes:
        raise ValueError(f"train.label_dropout: dataset '{dataset.name}' gives no class labels here "
                         "(an image folder needs one subfolder per class)")  # fmt: skip
    return int(classes)


@dataclass
class ModelState:
    """Model, optimizer and data of one training configuration, with a resumable step counter.

    `config` is the sweep as this training sees it: `SweepConfig.for_training(key)` (the trial's setup holds
    it so; `fmx train` / `fmx eval` call it)."""

    config: SweepConfig
    key: TrainingKey
    device: str = "cpu"
    dataset: Dataset = field(init=False)
    path: AffinePath = field(init=False)
    objective: Objective = field(init=False)
    model: nn.Module = field(init=False)
    num_classes: int = field(init=False, default=0)
    step: int = field(init=False, default=0)
    losses: list[tuple[int, float]] = field(init=False, default_factory=list)
    train_seconds: float = field(init=False, default=0.0)
    eval_seconds: float = field(init=False, default=0.0)
    rows: list[EvalRow] = field(init=False, default_factory=list)
    ema: torch.optim.swa_utils.AveragedModel | None = field(init=False, default=None)
    precision: Precision = field(init=False, default_factory=Precision)
    sampling_precision: Precision = field(init=False, default_factory=Precision)
    trained_on: str | None = field(init=False, default=None)  # the device's name (record.json: "device")

    def __post_init__(self) -> None:
        self.dataset = make_dataset(self.config.dataset.name, **self.config.dataset.options)
        if isinstance(self.dataset, ImageDataset):  # uint8 on the training device, converted per batch there
            self.dataset.to_device(self.device)
        self.path = build_path(self.key, self.config)
        times = self.config.train.time_sampling
        sampler = make_time_sampler(time_sampling_of(self.key.objective, times.kind), **times.options)
        self.objective = make_objective(self.key.objective, self.path, sampler)
        torch.manual_seed(self.key.seed)
        self.num_classes = _num_classes(self.config, self.dataset)
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

    @property
    def evaluated_model(self) -> nn.Module:
        """The EMA of the weights when the sweep keeps one (what diffusion and FM papers evaluate), else the model."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def compute_seconds(self) -> float:
        """The trial's own work (training + every evaluation), against which orchestration overhead is judged."""
        return self.train_seconds + self.eval_seconds

    # --- checkpoints ---------------------------------------------------------------------------

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
