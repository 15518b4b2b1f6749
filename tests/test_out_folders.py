"""Output folders are checked without touching the names another command may be creating at the same moment."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from orchestrator.out_folders import FolderUnusable, check_folder


def test_checks_of_one_fresh_folder_from_two_commands_at_once_never_see_each_other(tmp_path: Path):
    """Two sweeps started at once on a fresh folder once told one of them that results/ 'is not writable':
    the other's trial folder had just been removed again. Checks racing each other all pass and leave nothing."""
    problems: list[str] = []
    stop = threading.Event()

    def check_repeatedly(name: str) -> None:
        while not stop.is_set():
            try:
                check_folder(tmp_path / "results" / name / "inner", f"results folder {name}")
            except FolderUnusable as err:
                problems.append(str(err))
                stop.set()

    threads = [threading.Thread(target=check_repeatedly, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    stop.wait(timeout=3)
    stop.set()
    for thread in threads:
        thread.join()
    assert problems == []
    assert list(tmp_path.iterdir()) == []  # no trial folder left behind


@pytest.mark.parametrize(
    ("target", "words"),
    [("afile/out", "lies under"), ("afile", "is not a folder"), ("/proc/fmx-out", "cannot create")],
)
def test_a_folder_that_cannot_be_made_is_one_line_and_nothing_is_left(tmp_path: Path, target: str, words: str):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(FolderUnusable, match=words) as raised:
        check_folder(tmp_path / target, "--out-dir")
    assert str(raised.value).startswith("--out-dir: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
