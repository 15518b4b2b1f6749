"""Folders fmx writes its outputs into (results/<name>, --out-dir, --out), checked before anything is written:
a path that is a file, that lies under a file, or where the system refuses a folder is one line naming it, not
a traceback half-way through a command."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class FolderUnusable(ValueError):
    """An output folder that cannot be (or become) a folder fmx writes into; worded for the user."""


def folder_problem(path: Path) -> str | None:
    """Why `path` cannot be a folder fmx writes into, without creating anything; None where it can (as far as
    can be told before trying: `make_folder` tells the rest)."""
    try:
        for place in (path, *path.parents):
            if not (place.exists() or place.is_symlink()):
                continue
            if not place.is_dir():
                return f"'{place}' is not a folder" if place == path else f"'{path}' lies under '{place}', which is not a folder"
            if not os.access(place, os.W_OK | os.X_OK):
                return f"'{place}' is not writable"
            return None
    except OSError as err:  # a name too long, a loop of links
        return f"'{str(path)[:200]}' cannot be used: {err.strerror or err}"
    return None


def check_folder(path: Path, what: str) -> None:
    """FolderUnusable naming `what` (an option, a folder's role) where `path` cannot be a folder; what a trial
    creation makes (where the system alone can tell: /proc, a read-only mount) is removed again."""
    problem = folder_problem(path)
    if problem is None and not path.is_dir():
        made = [p for p in (path, *path.parents) if not p.exists()]
        try:
            path.mkdir(parents=True)
        except OSError as err:
            problem = f"cannot create '{path}': {err.strerror or err}"
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
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
