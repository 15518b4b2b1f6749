"""What keeps one sweep's state its own: a lock per sweep folder, and the MLflow store it logs to.

Two `fmx sweep` of one file in one folder would otherwise race MLflow's schema migrations on a fresh store
and, on an existing one, compute everything twice into the same runs. And a `--resume` against a store
that was replaced or lost would silently rewrite the tables without the rows it no longer holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from orchestrator.schema import SweepConfig
from orchestrator.store_check import sqlite_path
from orchestrator.mlflow_retry import retrying
from orchestrator.tracking import client, store_location
from orchestrator.safe_files import read_small

LOCK_FILE = "sweep.lock"
STATE_FILE = "sweep-state.json"


class SweepBusy(RuntimeError):
    """Another fmx process holds this sweep's lock."""


class StoreMismatch(RuntimeError):
    """The MLflow store no longer holds the experiment the sweep logged to."""


class SweepLock:
    """An exclusive, non-blocking lock on results/<sweep>/ held for the whole command (released at exit, also
    when the process is killed: the OS drops the lock with the file descriptor)."""

    def __init__(self, folder: Path, storage: Path | None = None) -> None:
        self.folder = folder
        self._locks = [(folder, FileLock(str(folder / LOCK_FILE), timeout=0))]
        if storage is not None and not storage.resolve().is_relative_to(folder.resolve()):
            # A shared storage_path: sweeps of the same name from other folders would share its Tune state.
            self._locks.append((storage, FileLock(str(storage / LOCK_FILE), timeout=0)))

    def acquire(self, sweep: str, existing_only: bool = False) -> None:
        """Take every lock (`existing_only`: those whose folder exists, creating none); SweepBusy if one is held."""
        for place, lock in self._locks:
            if lock.is_locked or (existing_only and not place.is_dir()):
                continue
            place.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire()
            except Timeout:
                self.release()
                holder = _read_holder(place / (LOCK_FILE + ".pid"))
                where = "in this folder" if place == self.folder else f"with the storage {place}"
                raise SweepBusy(
                    f"sweep '{sweep}' is already running {where}{holder} (lock {place / LOCK_FILE}); "
                    "wait for it to end, or run it from another folder"
                ) from None
            (place / (LOCK_FILE + ".pid")).write_text(f"{os.getpid()} {socket.gethostname()}")

    @property
    def held(self) -> bool:
        return all(lock.is_locked for _, lock in self._locks)

    def release(self) -> None:
        for _, lock in self._locks:
            lock.release()


def _read_holder(path: Path) -> str:
    """' (process PID on HOST)' from the lock's .pid file (a shared storage is locked from other machines)."""
    try:
        pid, _, host = (read_small(path, 4096) or b"").decode().strip().partition(" ")
        return f" (process {int(pid)}{f' on {host}' if host else ''})"
    except (OSError, ValueError):
        return ""


def config_digest(config: SweepConfig) -> str:
    """A fingerprint of everything the sweep file decides: --resume continues the sweep as it was started."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def write_sweep_state(folder: Path, tracking_uri: str, experiment_id: str, config: SweepConfig) -> None:
    """Remember which store and experiment this sweep logs to, and what it was started with (--resume checks)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "tracking_uri": tracking_uri, "experiment_id": experiment_id, "experiment_name": config.name,
        "config_digest": config_digest(config),
    }  # fmt: skip
    tmp = folder / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, folder / STATE_FILE)


_STATE_KEYS = ("tracking_uri", "experiment_id", "experiment_name")  # and config_digest (absent in older states)


def read_sweep_state(folder: Path) -> dict[str, Any] | None:
    """What `write_sweep_state` wrote, or None where there is none; a file that is there but is not that
    (cut off, edited) raises StoreMismatch naming it: --resume must not guess which store it logged to."""
    path = folder / STATE_FILE
    try:
        raw = read_small(path)
        if raw is None:
            return None
        state = json.loads(raw.decode())
        if not isinstance(state, dict) or not all(isinstance(state.get(k), str) for k in _STATE_KEYS):
            raise ValueError(f"not an object with the strings {', '.join(_STATE_KEYS)}")
        if not isinstance(state.get("config_digest", ""), str):
            raise ValueError("config_digest is not a string")
    except (OSError, ValueError) as err:
        raise StoreMismatch(
            f"--resume: {path} cannot be read ({str(err).splitlines()[0][:120]}); restore it, or delete {folder} to start over"
        ) from None
    return state


def check_store_matches(folder: Path, tracking_uri: str, config: SweepConfig, file: str | Path, same_file: bool = True) -> None:
    """Before --resume: the store must be the one the sweep logged to, still holding its experiment; and
    where an interrupted pass is to be continued (`same_file`), the sweep file must be the one it started
    with (its trainings go on from their checkpoints, with their settings)."""
    state = read_sweep_state(folder)
    if state is None:  # a sweep from before this check existed: nothing to compare with
        return
    sweep, experiment_id = state["experiment_name"], state["experiment_id"]
    if same_file and state.get("config_digest") not in (None, config_digest(config)):
        raise StoreMismatch(
            f"--resume: {file} has changed since sweep '{sweep}' was interrupted, and --resume first finishes that "
            f"run as it was started: restore the file, resume, then run the edited file (its new cells run then)"
        )
    if state["tracking_uri"] != tracking_uri:
        raise StoreMismatch(
            f"--resume: sweep '{sweep}' logs to {state['tracking_uri']}, not {tracking_uri}: "
            f"pass --tracking-uri {state['tracking_uri']}"
        )
    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise StoreMismatch(
            f"--resume: the MLflow store {db} of sweep '{sweep}' is gone; restore it, or delete {folder} to start over"
        )
    mlflow_client = client(tracking_uri)

    def lookup() -> Any:
        try:
            return mlflow_client.get_experiment(experiment_id)
        except Exception as err:
            if getattr(err, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    found = retrying(lookup, "look up the sweep's experiment", budget=10, where=store_location(tracking_uri))
    if found is None or found.name != sweep or found.lifecycle_stage == "deleted":
        raise StoreMismatch(
            f"--resume: the MLflow store at {tracking_uri} no longer holds experiment '{sweep}' (id {experiment_id}) "
            f"that this sweep logged to (was it replaced or deleted?); restore it, or delete {folder} to start over"
        )
