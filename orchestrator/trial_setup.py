"""What each trial of a pass is to do, resolved once in the driver and used by the trials as it is.

The driver builds it (so nothing here imports PyTorch, MLflow or matplotlib) and hands it to Tune through
`tune.with_parameters` (Ray's object store), never through a trial's params: Tune writes those to params.json
on storage, and a setup holds paths expanded from `${VAR}` and tracking URIs that may carry credentials.
A trial and each of its Ray Train workers (through `train_loop_config`) get it unpickled: pydantic models are
not validated again, and each trial's config is already the one its training sees (`for_training(key)`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fm_core.solvers import SolverSetting
from orchestrator.cell_store import cell_dir
from orchestrator.folders import fid_reference_cache
from orchestrator.schema import SweepConfig
from orchestrator.plan import SweepPlan, TrainingKey
from orchestrator.pass_work import EVALUATE, WorkItem


@dataclass(frozen=True)
class TrialSetup:
    """Everything one trial needs: what it trains or evaluates, and where it logs and stores."""

    key: TrainingKey
    item: WorkItem  # TRAIN, or EVALUATE with the (step, setting labels) still missing
    config: SweepConfig  # the sweep as this training sees it: config.for_training(key)
    settings: tuple[SolverSetting, ...]  # the sweep's solver settings, in the plan's order
    eval_steps: tuple[int, ...]
    snapshots: str  # the cell's folder on the sweep's storage (weights per evaluation step, artifacts)
    tracking_uri: str
    experiment_id: str
    storage_root: str  # the sweep's storage (Tune's pass folders, the cells)
    train_storage: str  # where a TorchTrainer keeps its runs (Ray Train's storage_path)
    pass_name: str

    @property
    def cell(self) -> str:
        return self.item.cell

    @property
    def fid_cache(self) -> Path:
        """Where its evaluations find (or leave) FID reference statistics."""
        return fid_reference_cache(self.storage_root)

    @property
    def evaluates_only(self) -> bool:
        """A trained cell's missing evaluations, from its stored weights: no training."""
        return self.item.mode == EVALUATE


@dataclass(frozen=True)
class PassSetup:
    """Every trial's setup of one pass, by trial id: the one object Tune ships to all of them."""

    trials: dict[str, TrialSetup]

    def of(self, params: dict[str, Any]) -> TrialSetup:
        """The setup of the trial whose Tune params (`{"key": training key}`) these are."""
        return self.trials[TrainingKey(**params["key"]).trial_id]


def build_pass_setup(
    config: SweepConfig, plan: SweepPlan, work: Iterable[WorkItem], *, tracking_uri: str, experiment_id: str,
    storage_root: str, train_storage: str, pass_name: str,
) -> PassSetup:  # fmt: skip
    """Resolve every work item of the pass into its trial's setup (called once, in the driver)."""
    settings, eval_steps = tuple(plan.settings), tuple(plan.eval_steps)
    return PassSetup({
        item.key.trial_id: TrialSetup(
            key=item.key, item=item, config=config.for_training(item.key), settings=settings, eval_steps=eval_steps,
            snapshots=cell_dir(storage_root, item.cell), tracking_uri=tracking_uri, experiment_id=experiment_id,
            storage_root=storage_root, train_storage=train_storage, pass_name=pass_name,
        )
        for item in work
    })  # fmt: skip
