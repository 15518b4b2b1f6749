"""Reading and changing files on a sweep's own folders (its storage, its results folder), which anyone with
access may have edited: a symbolic link there is never followed (deleting, writing or uploading through it
would reach outside the sweep), a file is read only where it is a regular file (a FIFO would block the reader
for good, /dev/zero would never end) and only up to a bound.

The sweep's folders are built from resolved paths (orchestrator.folders), so every link a path below them
holds is one the sweep's own folders hold: refusing every link on the path refuses exactly those."""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: The most bytes fmx reads of one of its small files (a ledger, a state note, a record, Tune's state).
MAX_SMALL_FILE = 256 * 2**20


class DamagedFile(ValueError):
    """A file of the sweep's own that exists but cannot be read as what it must hold."""


class UnsafeFile(DamagedFile):
    """A path on the sweep's folders that fmx will not follow or read; worded for the user."""


def refuse_links(path: str | Path) -> None:
    """UnsafeFile where `path` or a folder above it is a symbolic link (missing parts are fine)."""
    here = Path(path)
    for place in (here, *here.parents):
        if place.is_symlink():
            raise UnsafeFile(f"{place} is a symbolic link: fmx does not follow links in a sweep's folders; "
                             "replace it by the folder or file itself")  # fmt: skip


def refuse_special(path: str | Path) -> os.stat_result | None:
    """The file's lstat where it is a regular file or folder, None where it is missing; UnsafeFile for a link, a
    FIFO, a socket or a device."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        refuse_links(path)
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise UnsafeFile(f"{path} is not a regular file (a FIFO, socket or device): fmx does not read it; remove it")
    return info


def read_small(path: str | Path, limit: int = MAX_SMALL_FILE) -> bytes | None:
    """A small file's bytes, None where it is missing: never through a link, never a special file, never more
    than `limit` bytes (UnsafeFile)."""
    refuse_links(path)
    info = refuse_special(path)
    if info is None:
        return None
    if stat.S_ISDIR(info.st_mode):
        raise UnsafeFile(f"{path} is a folder, not a file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced between the two looks
            raise UnsafeFile(f"{path} is not a regular file: fmx does not read it; remove it")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFile(f"{path} is larger than {limit // 2**20} MiB: not a file fmx wrote; remove it")
    return data


def check_folder_files(folder: str | Path) -> None:
    """A stored folder fmx reads in place (a snapshot): no link on its way, no link or special file in it."""
    refuse_links(folder)
    if refuse_special(folder) is None:
        return
    for entry in os.scandir(folder):
        refuse_special(entry.path)
