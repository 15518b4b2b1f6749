"""Where a training left unfinished by an earlier pass continues from, found through fmx's own JSON only."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.pass_work import EVALUATE, TRAIN, WorkItem
from orchestrator.passes import PassEntry
from orchestrator.plan import TrainingKey, train_run_name
from orchestrator.resume_points import with_resume_points

KEY = TrainingKey("ot", "fm", "independent", 0)
OTHER = TrainingKey("vp", "fm", "independent", 0)


def _checkpoint(folder: Path, trial_id: str, step: int, state: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps({"trial_id": trial_id, "step": step}))
    if state:
        (folder / "state.pt").write_bytes(b"weights")
    return folder


def _trial_folder(tune: Path, name: str, key: TrainingKey) -> Path:
    folder = tune / name
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"key": key.as_dict()}))
    (folder / "params.pkl").write_bytes(b"never read")
    return folder


def test_the_newest_whole_checkpoint_of_the_cell_from_any_earlier_pass(tmp_path: Path):
    storage = tmp_path / "ray"
    item, other = WorkItem(KEY, "cellA", TRAIN, "retry"), WorkItem(OTHER, "cellB", TRAIN, "new")
    passes = [PassEntry("tune", "d", [item.as_dict(), other.as_dict()], True), PassEntry("tune-2", "d", [item.as_dict()], False)]
    first = _trial_folder(storage / "tune", "training_trial_0_key=ot", KEY)
    _checkpoint(first / "checkpoint_000001", KEY.trial_id, 200)
    ours = _checkpoint(first / "checkpoint_000002", KEY.trial_id, 300)
    _checkpoint(first / "checkpoint_000003", KEY.trial_id, 900, state=False)  # cut off: no state.pt
    _checkpoint(first / "checkpoint_000004", OTHER.trial_id, 800)  # another trial's
    second = _trial_folder(storage / "tune-2", "training_trial_0_key=ot", KEY)
    (second / "checkpoint_000005").mkdir()
    (second / "checkpoint_000005" / "record.json").symlink_to(ours / "record.json")  # a link: never followed
    (second / "checkpoint_000005" / "state.pt").write_bytes(b"weights")
    trained_vp = _trial_folder(storage / "tune", "training_trial_1_key=vp", OTHER)
    _checkpoint(trained_vp / "checkpoint_000000", OTHER.trial_id, 100)

    work = with_resume_points(str(storage), passes, [item, other, WorkItem(KEY, "cellA", EVALUATE, "new")], finished={"cellB"})
    assert work[0].resume_from == str(ours)
    assert work[1].resume_from is None  # trained to the end: it trains again only from step 0
    assert work[2].resume_from is None  # an evaluation continues nothing

    # A Ray Train run of the cell (a TorchTrainer trial) holds a newer one; a pass that never trained the cell
    # (or one from before the ledger, which does not say) is not searched.
    newer = _checkpoint(storage / "train" / train_run_name(KEY.trial_id, "cellA", "tune-2") / "checkpoint_000007", KEY.trial_id, 600)
    _checkpoint(storage / "train" / train_run_name(KEY.trial_id, "cellA", "tune-3") / "checkpoint_000001", KEY.trial_id, 700)
    passes += [PassEntry("tune-3", "d", [other.as_dict()], True)]
    assert with_resume_points(str(storage), passes, [item], finished=set())[0].resume_from == str(newer)
    assert with_resume_points(str(storage), [PassEntry("tune", None, None, False)], [item], finished=set())[0].resume_from is None
