"""What fmx keeps on disk between runs (the digits classifier, downloaded FID detectors, FID reference
statistics): where it lives unless a caller says otherwise, and how a file is written so that no reader ever
sees half of it. Torch-free, so that the sweep driver can name these folders.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: Overrides the per-user cache folder (tests point it at a folder of their own).
CACHE_ENV = "FMX_CACHE_DIR"


def default_cache_dir() -> Path:
    """`$FMX_CACHE_DIR`, else `~/.cache/fmx`: one machine's cache, shared by its runs."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fmx"


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write(f)` into a temporary file beside `path`, then os.replace onto it: concurrent writers at worst
    write it twice, and readers see the old file, the new one or none, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
