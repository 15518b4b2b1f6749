"""Where a training that an earlier pass left unfinished (interrupted, killed, failed) continues from: the
newest checkpoint fmx itself wrote for its cell, found through JSON only: the ledger of passes (which pass
trained which cell), each Tune trial's params.json (which trial folder is which training) and each
checkpoint's record.json (its trial and step). The trial then loads its state.pt with
torch.load(weights_only=True) (orchestrator.model_state).

Tune's own state of a pass (tuner.pkl, the search state, the trials in experiment_state) is pickles that
build whatever they name: the sweep's storage is untrusted, so fmx never hands them to `Tuner.restore`.
`--resume` runs a new Tune experiment over what is left instead, each training from its point found here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from orchestrator.cell_store import list_files, read_json
from orchestrator.folders import TRAIN_DIR, join
from orchestrator.pass_work import TRAIN, WorkItem
from orchestrator.passes import PassEntry
from orchestrator.plan import train_run_name
from orchestrator.records import RECORD_FILE, STATE_FILE
from orchestrator.safe_files import DamagedFile, UnsafeFile

CHECKPOINT_PREFIX = "checkpoint_"  # Ray's name for the checkpoint folders of a Tune trial or a Train run
PARAMS_FILE = "params.json"  # Tune's JSON of a trial's point of the grid: fmx's training key


@dataclass(frozen=True)
class _Checkpoint:
    folder: str
    step: int


def _checkpoints(folder: str, trial_id: str) -> list[_Checkpoint]:
    """The whole checkpoints of `trial_id` below `folder` (a Tune trial's folder or a Train run's): a
    `checkpoint_*` folder holding both files, whose record names the trial. Anything unreadable, or a link,
    is passed over: an earlier checkpoint (or step 0) serves instead."""
    try:
        files = set(list_files(folder))
    except (UnsafeFile, OSError):
        return []
    found = []
    for name in files:
        parent, _, base = name.rpartition("/")
        if base != RECORD_FILE or not parent.startswith(CHECKPOINT_PREFIX) or "/" in parent or f"{parent}/{STATE_FILE}" not in files:
            continue
        try:
            record = read_json(join(folder, name))
        except (DamagedFile, UnsafeFile):
            continue
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, int) and step > 0 and record.get("trial_id") == trial_id:
            found.append(_Checkpoint(join(folder, parent), step))
    return found


def _tune_trial_folders(storage: str, pass_name: str) -> dict[str, str]:
    """Each Tune trial folder of a pass by the training key its params.json holds (as JSON text)."""
    tune = join(storage, pass_name)
    try:
        names = [n for n in list_files(tune) if n.count("/") == 1 and n.endswith("/" + PARAMS_FILE)]
    except (UnsafeFile, OSError):
        return {}
    out = {}
    for name in names:
        try:
            params = read_json(join(tune, name))
        except (DamagedFile, UnsafeFile):
            continue
        if isinstance(params, dict) and isinstance(params.get("key"), dict):
            out[_key_text(params["key"])] = join(tune, name.partition("/")[0])
    return out


def _key_text(key: dict) -> str:
    return json.dumps(key, sort_keys=True)


def with_resume_points(storage: str, passes: list[PassEntry], work: list[WorkItem], finished: set[str]) -> list[WorkItem]:
    """The pass's work with each training of a cell not in `finished` (those MLflow holds trained to the end:
    one of them trains again only for an evaluation step whose weights are gone, from step 0) set to continue
    from its newest checkpoint of an earlier pass that trained that cell, where one is whole."""
    trials_of: dict[str, dict[str, str]] = {}
    out = []
    for item in work:
        if item.mode != TRAIN or item.cell in finished:
            out.append(item)
            continue
        found: list[_Checkpoint] = []
        for entry in passes:
            if not any(w.cell == item.cell and w.mode == TRAIN for w in entry.items() or []):
                continue  # a pass from before the ledger says not which cell it trained: never guessed
            trials = trials_of.setdefault(entry.name, _tune_trial_folders(storage, entry.name))
            trial_folder = trials.get(_key_text(item.key.as_dict()))
            if trial_folder is not None:
                found += _checkpoints(trial_folder, item.key.trial_id)
            found += _checkpoints(join(storage, TRAIN_DIR, train_run_name(item.key.trial_id, item.cell, entry.name)), item.key.trial_id)
        best = max(found, key=lambda c: c.step, default=None)
        out.append(item if best is None else replace(item, resume_from=best.folder))
    return out
