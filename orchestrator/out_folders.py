"""Folders fmx writes its outputs into (results/<name>, --out-dir, --out), checked before anything is written:
a path that is a file, that lies under a file, or where the system refuses a folder is one line naming it, not
a traceback half-way through a command.

The checks never create or remove a folder of the path itself: two commands started at once on a fresh folder
would otherwise see each other's trial folders come and go (one of them was once told that a folder the other
had just removed 'is not writable')."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


class FolderUnusable(ValueError):
    """An output folder that cannot be (or become) a folder fmx writes into; worded for the user."""


def _deepest_existing(path: Path) -> Path | None:
    """The path itself or its nearest ancestor that exists (a dangling link counts: it is judged, not followed
    past); OSError for a name the system refuses (too long, a loop of links)."""
    for place in (path, *path.parents):
        if place.exists() or place.is_symlink():
            return place
    return None


def folder_problem(path: Path) -> str | None:
    """Why `path` cannot be a folder fmx writes into, without creating anything; None where it can (as far as
    can be told before trying: `check_folder` tells the rest). A folder another process removes meanwhile is
    looked at again from its parent, not reported as unwritable."""
    try:
        for _ in range(len(path.parts) + 1):
            place = _deepest_existing(path)
            if place is None:
                return None
            if not place.is_dir():
                if not (place.exists() or place.is_symlink()):
                    continue  # gone meanwhile
                return f"'{place}' is not a folder" if place == path else f"'{path}' lies under '{place}', which is not a folder"
            if os.access(place, os.W_OK | os.X_OK):
                return None
            if place.exists():
                return f"'{place}' is not writable"
        return None
    except OSError as err:  # a name too long, a loop of links
        return f"'{str(path)[:200]}' cannot be used: {err.strerror or err}"


def _creation_problem(path: Path) -> str | None:
    """Whether the system lets a folder be made where `path` would go (/proc, a read-only mount refuse it
    although access() says yes), tried with a private folder of a unique name in the deepest existing
    ancestor, removed again at once: what another process makes or removes meanwhile is never touched."""
    try:
        place = _deepest_existing(path)
        if place is None or place == path:
            return None
        probe = tempfile.mkdtemp(prefix=".fmx-probe-", dir=place)
    except OSError as err:
        return f"cannot create '{path}': {err.strerror or err}"
    with contextlib.suppress(OSError):
        os.rmdir(probe)
    return None


def check_folder(path: Path, what: str) -> None:
    """FolderUnusable naming `what` (an option, a folder's role) where `path` cannot be a folder; nothing is
    left behind."""
    problem = folder_problem(path)
    if problem is None and not path.is_dir():
        problem = _creation_problem(path)
    if problem is not None:
        raise FolderUnusable(f"{what}: {problem}")


def make_folder(path: Path, what: str) -> Path:
    """Create `path` (and its parents) as a folder for outputs, or raise FolderUnusable naming `what`."""
    problem = folder_problem(path)
    if problem is not None:
        raise FolderUnusable(f"{what}: {problem}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FolderUnusable(f"{what}: cannot create '{path}': {err.strerror or err}") from None
    return path
