"""Where a sweep keeps things, computed once per command from its validated file.

`results/<name>/` holds what the user reads (tables, report) and the driver's own bookkeeping (lock, state);
the storage holds what trials write (Tune state, checkpoints, stored weights): the file's `storage_path`
(shared on a cluster: a mounted folder or a cloud URI such as s3://bucket/fmx) or `results/<name>/ray`.
The storage is a string, since URIs are not local paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fm_core.cache import default_cache_dir

#: Where a TorchTrainer trial's Ray Train run keeps its checkpoints (`<storage>/train/train-<trial id>/`).
TRAIN_DIR = "train"
#: Where FID reference statistics are cached, by content (fm_core.fid.reference_key), below the storage.
FID_REFERENCE_DIR = "fid-reference"


def join(base: str, *parts: str) -> str:
    """A path under a folder or a URI (`s3://b/x` + `y` -> `s3://b/x/y`): the one join for storage locations."""
    return "/".join([base.rstrip("/"), *parts])


def fid_reference_cache(storage: str | None) -> Path:
    """Where evaluations keep FID reference statistics: the sweep's storage, computed once for all its trials;
    on a cloud URI (not a folder trials can write atomically) and outside a sweep, this machine's cache."""
    if storage is None or "://" in storage:
        return default_cache_dir() / FID_REFERENCE_DIR
    return Path(storage) / FID_REFERENCE_DIR


@dataclass(frozen=True)
class SweepFolders:
    name: str
    results: Path  # results/<name>: runs.parquet, table.parquet, the report, sweep.lock, sweep-state.json
    storage: str  # Tune's passes, Ray Train runs, cells' stored weights and artifacts

    @classmethod
    def of(cls, name: str, storage_path: str | None, root: Path | None = None) -> SweepFolders:
        results = (root or Path.cwd()) / "results" / name
        if storage_path and "://" in storage_path:
            storage = f"{storage_path.rstrip('/')}/{name}"
        elif storage_path:
            storage = str(Path(storage_path).expanduser().resolve() / name)
        else:
            storage = str(results.resolve() / "ray")
        return cls(name, results, storage)

    @property
    def is_uri(self) -> bool:
        return "://" in self.storage

    @property
    def local_storage(self) -> Path | None:
        """The storage as a local folder, None for a URI."""
        return None if self.is_uri else Path(self.storage)

    @property
    def train(self) -> str:
        return join(self.storage, TRAIN_DIR)

    def tune(self, pass_name: str) -> str:
        """A pass's Tune experiment folder."""
        return join(self.storage, pass_name)
