"""Content keys: what makes a training (and an evaluation) the same one, whatever file or pass asked for it.

A training cell is a hash of everything that decides the trained weights: the dataset and its options, the
model, the training settings, path, objective, coupling, seed and the version of fmx's training code. An
evaluation adds the solver setting, the checkpoint step and the evaluation settings (`eval_digest`). A sweep
file that is edited after a run keeps every cell whose inputs did not change: those are reused, and only
new cells train or evaluate. Settings that change how a training runs but not what it computes (where it
logs, how often it checkpoints, CPUs per worker, torch.compile, GPU or CPU) are left out, so moving a sweep
to a cluster reuses what a laptop trained.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from fm_core.couplings import COUPLINGS  # torch-free: which couplings compute a pairing
from orchestrator.schema import OPERATIONAL_TRAIN_FIELDS, SweepConfig  # the train settings a cell leaves out

if TYPE_CHECKING:
    from orchestrator.plan import TrainingKey

#: Bump when a change to fmx's training code changes what a training computes: every cell is then new.
TRAINING_CODE_VERSION = 1
#: Eval settings that do not change a result: which steps to evaluate (each step is its own evaluation) and
#: how many points go through the solver at once.
OPERATIONAL_EVAL_FIELDS = frozenset({"at_steps", "batch_size"})
KEY_LENGTH = 16
#: Bump when the batches of a coupling that computes (minibatch OT, Sinkhorn) change: 2 since they are drawn per
#: (seed, rank, step) and paired off the training thread (fm_core.paired_batches); independent cells keep theirs.
PAIRED_BATCHES_VERSION = 2


def _digest(content: Any) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def training_content(config: SweepConfig, key: TrainingKey) -> dict[str, Any]:
    """What the training cell hashes. Dataset folders are taken as written (`${DATA}/cifar10`), so one data
    root mounted elsewhere on another machine is still the same training."""
    config = config.for_training(key)  # the train settings it trains with, whether from train or grid.train
    dataset = {"name": config.dataset.name, **config.dataset.options}
    dataset.update({k.split(".", 1)[1]: v for k, v in config.written_as.items() if k.startswith("dataset.")})
    train = {k: v for k, v in config.train.model_dump(mode="json").items() if k not in OPERATIONAL_TRAIN_FIELDS}
    couplings = train.pop("coupling_options")  # only this training's coupling's options are its content
    if COUPLINGS[key.coupling].computes:
        train["paired_batches"] = {"version": PAIRED_BATCHES_VERSION, "options": couplings.get(key.coupling, {})}
    faults = config.fault_injection
    injected = faults.nan_at_step if faults is not None and key.trial_id in faults.trials else None
    return {
        "code": TRAINING_CODE_VERSION, "dataset": dataset, "model": config.model.applied, "train": train,
        **{k: v for k, v in key.as_dict().items() if k != "train"}, **({"nan_at_step": injected} if injected is not None else {}),
    }  # fmt: skip


def training_cell(config: SweepConfig, key: TrainingKey) -> str:
    """The training's content key (16 hex digits)."""
    return _digest(training_content(config, key))


def eval_digest(config: SweepConfig) -> str:
    """The key of the evaluation settings every evaluation of the sweep shares (samples, seed, likelihood
    protocol, reference tolerance, precision, FID's detector, samples and reference, ...): changing one makes
    every evaluation a new cell."""
    settings = {k: v for k, v in config.eval.model_dump(mode="json").items() if k not in OPERATIONAL_EVAL_FIELDS}
    fid = config.eval.fid
    del settings["fid"]  # a sweep without FID keeps the key it had before FID existed
    if settings["per_sample_nfe"] is None:  # nor one without per-sample solves the key it had before they existed
        del settings["per_sample_nfe"]
    if fid is not None:
        settings["fid"] = fid.content(config.written_as)
    return _digest({"code": TRAINING_CODE_VERSION, "eval": settings})[:8]
