"""Keep Ray Tune's experiment state restorable through a full disk.

Tune rewrites its state files in place; when the disk fills mid-write they are left truncated, and a later
`Tuner.restore` then fails and quietly starts a new, empty experiment. fmx keeps the last copy of each state
file that parsed (written atomically beside Tune's folder), puts it back before `--resume`, and refuses to
resume from state it cannot read.
"""

from __future__ import annotations

import json
import pickletools
import shutil
from pathlib import Path

from orchestrator.safe_files import read_small

STATE_PATTERNS = ("experiment_state-*.json", "basic-variant-state-*.json")
BACKUP_DIR = "tune-state-backup"


class CorruptTuneState(RuntimeError):
    """Tune's state is unreadable and no good copy of it is left."""


def backup_dir(tune_path: Path) -> Path:
    return tune_path.parent / BACKUP_DIR


def parses(path: Path) -> bool:
    """Whether a state file is whole. experiment_state-*.json is JSON; basic-variant-state-*.json, despite its
    name, is a (cloud)pickle of Tune's search state. That one is never unpickled here (unpickling runs what
    the file names, and the file sits on storage others may write): pickletools only walks its opcodes,
    which executes nothing, and a whole pickle ends with STOP."""
    try:
        raw = read_small(path)  # never through a link, never a FIFO or /dev/zero
        if raw is None:
            return False
        if path.name.startswith("experiment_state-"):
            json.loads(raw.decode())
            return True
        last = None
        for last, _, _ in pickletools.genops(raw):
            pass
        return last is not None and last.name == "STOP"
    except Exception:  # noqa: BLE001 - truncated JSON or pickle: any error means unreadable
        return False


def repair_tune_state(tune_path: str) -> list[str]:
    """Before a restore: put back the last good copy of every state file that no longer parses. Returns the
    names repaired; raises CorruptTuneState where a file is unreadable and has no good copy (Tune would
    otherwise start a new, empty experiment, or run the whole grid again). Remote storage is left to Tune."""
    if "://" in tune_path:
        return []
    folder = Path(tune_path)
    backup = backup_dir(folder)
    repaired = []
    for pattern in STATE_PATTERNS:
        for path in sorted(folder.glob(pattern)):
            if parses(path):
                continue
            good = backup / path.name
            if not (good.is_file() and parses(good)):
                raise CorruptTuneState(
                    f"the sweep's Ray Tune state {path} is unreadable (a full disk while it was written?) and no "
                    f"good copy of it is in {backup}; delete the sweep's state ({folder.parent}) to start over"
                )
            shutil.copyfile(good, path)
            repaired.append(path.name)
    if not any(parses(p) for p in folder.glob(STATE_PATTERNS[0])):
        raise CorruptTuneState(
            f"the sweep's Ray Tune state under {folder} is unreadable (a full disk while it was written?) and no "
            f"good copy is left in {backup}; delete the sweep's state ({folder.parent}) to start over"
        )
    return repaired
