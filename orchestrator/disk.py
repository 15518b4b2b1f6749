"""A full disk, recognised wherever it surfaces (an OSError, sqlite's "database or disk is full", a message
wrapped by Ray or MLflow), so that it ends a sweep with one line naming the place, not a traceback or a hang."""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from orchestrator.store_check import sqlite_path

_FULL_TEXT = re.compile(r"no space left on device|database or disk is full|disk quota exceeded", re.IGNORECASE)


class DiskFull(RuntimeError):
    """No space left where fmx (or Ray, or MLflow) had to write. Pickles by its place alone, since Ray
    re-raises a trial's error in the driver."""

    errno = errno.ENOSPC

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(f"no space left on device ({where})")

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (DiskFull, (self.where,))


def as_disk_full(err: BaseException, where: str | None = None, places: Sequence[Path] = ()) -> DiskFull | None:
    """The DiskFull an error stands for (following its causes), or None when it is about something else. It
    names `where`, else the path the error names, else the fullest of `places` and the working folder: a
    write() on an open file, or sqlite's "database or disk is full", says no path, yet the line must."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFull):
            return current
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFull(where or (str(current.filename) if current.filename else fullest(places)))
        if _FULL_TEXT.search(str(current)):
            return DiskFull(where or _path_in(str(current)) or fullest(places))
        current = current.__cause__ or current.__context__
    return None


def fullest(places: Sequence[Path]) -> str:
    """Of `places` and the working folder, the one whose filesystem has the least space left (where a write
    that did not say where most likely failed)."""
    candidates = [*places, Path.cwd()]
    return str(min(candidates, key=free_bytes))  # the first of equals


def _path_in(text: str) -> str | None:
    match = re.search(r"'(/[^']+)'", text)
    return match.group(1) if match else None


def free_bytes(path: Path) -> int:
    """Free space of the filesystem holding `path` (or its nearest existing parent)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


#: Below this, a write is as good as failed (Ray's and MLflow's files need more than a few pages).
NEARLY_FULL_BYTES = 1 << 20


def sweep_places(results: Path, tracking_uri: str, storage: Path | None = None) -> list[Path]:
    """Where a sweep writes on this machine: its results folder, its local storage, a local MLflow store's folder."""
    db = sqlite_path(tracking_uri)
    return [results] + ([storage] if storage is not None else []) + ([db.parent] if db is not None else [])


def full_disk_under(results: Path, tracking_uri: str, storage: Path | None = None) -> DiskFull | None:
    """After an error that did not say why (Tune reports a failed state write as "Aborted.", or stops its trials
    as if interrupted): a DiskFull if the folder of the results, the sweep's local storage or a local MLflow
    store is (nearly) out of space."""
    for place in sweep_places(results, tracking_uri, storage):
        if free_bytes(place) < NEARLY_FULL_BYTES:
            return DiskFull(str(place))
    return None
