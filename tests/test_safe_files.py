"""The sweep's own folders are untrusted: a link there is never followed (nothing outside the sweep is deleted,
written or uploaded through it), special files are never read (a FIFO would block for good, /dev/zero never
ends), and small files are read up to a bound. Through fmx's storage functions and the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.cell_store import get_dir, list_files, put_dir, put_files, read_json, remove_dir, write_json
from orchestrator.safe_files import DamagedFile, UnsafeFile, read_small
from orchestrator.sweep_guard import StoreMismatch, read_sweep_state
from tests.cli_helpers import run_fmx


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the sweep holding a file that must survive, unread and unsent."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "precious.txt").write_text("not the sweep's")
    return folder


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    folder = tmp_path / "storage" / "cells" / "abc"
    folder.mkdir(parents=True)
    return folder


def test_a_linked_folder_is_neither_deleted_written_nor_listed(storage: Path, outside: Path, tmp_path: Path):
    artifacts = storage / "artifacts"
    artifacts.symlink_to(outside)
    new = tmp_path / "new.png"
    new.write_bytes(b"png")
    for call in (lambda: remove_dir(str(artifacts)), lambda: put_files([new], str(artifacts)),
                 lambda: list_files(str(artifacts)), lambda: put_dir(tmp_path / "snapshot", str(artifacts)),
                 lambda: list_files(str(artifacts / "plots"))):  # fmt: skip
        with pytest.raises(UnsafeFile, match="symbolic link"):
            call()
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]


def test_a_link_inside_a_listed_folder_is_refused_not_followed(storage: Path, outside: Path):
    (storage / "artifacts" / "plots").mkdir(parents=True)
    (storage / "artifacts" / "plots" / "ok.png").write_bytes(b"png")
    assert list_files(str(storage / "artifacts")) == ["plots/ok.png"]
    (storage / "artifacts" / "samples").symlink_to(outside)
    with pytest.raises(UnsafeFile, match="samples"):
        list_files(str(storage / "artifacts"))


def test_a_snapshot_with_a_fifo_or_a_link_is_refused_before_it_is_read(storage: Path, outside: Path):
    step = storage / "step-10"
    step.mkdir()
    (step / "record.json").write_text("{}")
    assert get_dir(str(step), Path("unused")) == step
    os.mkfifo(step / "state.pt")
    with pytest.raises(UnsafeFile, match="not a regular file"):
        get_dir(str(step), Path("unused"))
    (step / "state.pt").unlink()
    (step / "state.pt").symlink_to(outside / "precious.txt")
    with pytest.raises(UnsafeFile, match="symbolic link"):
        get_dir(str(step), Path("unused"))


def test_small_files_are_bounded_and_never_special(tmp_path: Path):
    ledger = tmp_path / "passes.json"
    assert read_small(ledger) is None and read_json(str(ledger)) is None  # missing
    write_json(str(ledger), [1])
    assert read_json(str(ledger)) == [1]
    ledger.unlink()
    ledger.symlink_to("/dev/zero")
    with pytest.raises(DamagedFile, match="symbolic link"):
        read_json(str(ledger))
    ledger.unlink()
    os.mkfifo(ledger)
    with pytest.raises(DamagedFile, match="not a regular file"):
        read_json(str(ledger))
    ledger.unlink()
    ledger.write_bytes(b"0" * 2048)
    with pytest.raises(UnsafeFile, match="larger than"):
        read_small(ledger, limit=1024)
    (tmp_path / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeFile, match="symbolic link"):
        write_json(str(tmp_path / "linked" / "passes.json"), [])
    assert not (tmp_path / "elsewhere").exists()


SWEEP = """\
name: safe
dataset: {name: moons}
model: {kind: mlp, hidden: 16, depth: 2}
train: {steps: 10, batch_size: 32}
eval: {samples: 50, likelihood_points: 10}
grid: {solver: [euler], nfe: [4]}
"""


def test_a_ledger_of_passes_linked_to_dev_zero_is_one_line_and_exit_2(tmp_path: Path):
    """Read until MemoryError before; now refused at once, nothing started."""
    (tmp_path / "safe.yaml").write_text(SWEEP)
    ledger = tmp_path / "results" / "safe" / "ray" / "passes.json"
    ledger.parent.mkdir(parents=True)
    ledger.symlink_to("/dev/zero")
    for args in (["sweep", "safe.yaml"], ["sweep", "safe.yaml", "--resume"]):
        result = run_fmx(args, cwd=tmp_path, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and "passes.json" in result.stderr and "symbolic link" in result.stderr, result.stderr


def test_the_sweeps_state_note_linked_to_dev_zero_is_refused_as_unreadable(tmp_path: Path):
    (tmp_path / "sweep-state.json").symlink_to("/dev/zero")
    with pytest.raises(StoreMismatch, match="symbolic link"):
        read_sweep_state(tmp_path)
