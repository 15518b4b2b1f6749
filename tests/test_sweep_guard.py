"""What keeps concurrent sweeps apart, with real processes and real files: a shared `storage_path` is locked as
well as the sweep's folder, and two processes creating one fresh MLflow sqlite store at once both succeed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.sweep_guard import SweepBusy, SweepLock
from tests.cli_helpers import REPO

HOLD = """
import sys, time
from pathlib import Path
from orchestrator.sweep_guard import SweepLock
lock = SweepLock(Path(sys.argv[1]), Path(sys.argv[2]))
lock.acquire("s")
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_folder_with_the_same_storage_path_is_refused_while_the_first_runs(tmp_path: Path):
    storage = tmp_path / "shared" / "s"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "a" / "results" / "s"), str(storage)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        other = SweepLock(tmp_path / "b" / "results" / "s", storage)
        with pytest.raises(SweepBusy, match=f"with the storage {storage}.*process {holder.pid}"):
            other.acquire("s")
        assert not other.held
        # The second folder's own lock was let go with the refusal: nothing stays locked by a refused sweep.
        SweepLock(tmp_path / "b" / "results" / "s").acquire("s")
    finally:
        holder.kill()
        holder.wait()
    again = SweepLock(tmp_path / "b" / "results" / "s", storage)
    again.acquire("s")  # the OS dropped the killed holder's lock
    assert again.held
    again.release()


def test_storage_inside_the_sweep_folder_is_one_lock(tmp_path: Path):
    folder = tmp_path / "results" / "s"
    lock = SweepLock(folder, folder / "ray")
    lock.acquire("s")
    assert lock.held and not (folder / "ray").exists()  # the default storage needs no lock of its own
    lock.release()


RACE = """
import sys, time
from orchestrator.tracking import ensure_experiment
start = float(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
print(ensure_experiment(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.parametrize("attempt", range(2))
def test_two_sweeps_creating_one_fresh_store_at_once_both_get_their_experiment(tmp_path: Path, attempt: int):
    """Without the store lock, MLflow's alembic migrations raced and one of the two processes died."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = str(time.time() + 6)  # both past their imports, then released together
    procs = [subprocess.Popen([sys.executable, "-c", RACE, uri, name, start], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in ("a", "b")]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    ids = {out.strip().splitlines()[-1] for out, _ in outs}
    from mlflow.tracking import MlflowClient

    names = {e.name for e in MlflowClient(tracking_uri=uri).search_experiments()}
    assert len(ids) == 2 and {"a", "b"} <= names
