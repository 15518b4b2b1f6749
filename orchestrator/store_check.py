"""Is a local MLflow store usable? Checked read-only with the standard library, in milliseconds.

MLflow meets a corrupt sqlite file (garbage bytes, another program's database) with a traceback or minutes
of retries, and meets a missing one by creating it: read-only commands (`fmx tables`, `report`, `ui`) must
not create a store, and no command should start Ray before finding that the store it will write is broken.
Nothing here imports MLflow, and nothing here creates or changes a file.
"""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path
from urllib.parse import urlparse

SQLITE_MAGIC = b"SQLite format 3\x00"
#: Tables every MLflow sqlite store has (its schema since MLflow 1.x).
MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs"})


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (`sqlite:////abs/mlflow.db` absolute, `sqlite:///mlflow.db`
    relative to the working directory), else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def no_store_message(where: Path | str) -> str:
    return f"no MLflow store at {where}; run `fmx sweep` first or pass --tracking-uri"


def check_sqlite_store(db_path: str | Path, must_exist: bool = False) -> str | None:
    """What makes `db_path` unusable as an MLflow sqlite store, or None if it is one (or is absent and
    `must_exist` is false: a sweep creates it). Opened read-only (`mode=ro`), so nothing is created."""
    path = Path(db_path)
    try:
        info = path.stat()
    except FileNotFoundError:
        return no_store_message(path) if must_exist else None
    except OSError as err:
        return f"cannot read the MLflow store {path}: {err.strerror}"
    if stat.S_ISDIR(info.st_mode):
        return f"the MLflow store {path} is a directory, not a sqlite database file"
    if not stat.S_ISREG(info.st_mode):
        return f"the MLflow store {path} is not a regular file"
    if info.st_size == 0:  # sqlite and MLflow take an empty file for a new database
        return no_store_message(path) + " (the file is empty)" if must_exist else None
    return _header_problem(path) or _schema_problem(path, must_exist)


def _header_problem(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_MAGIC))
    except OSError as err:
        return f"cannot read the MLflow store {path}: {err.strerror}"
    if header != SQLITE_MAGIC:
        return f"{path} is not a sqlite database, so not an MLflow store; move it away or pass --tracking-uri"
    return None


def _schema_problem(path: Path, must_exist: bool) -> str | None:
    try:
        tables = _table_names(path)
    except sqlite3.OperationalError as err:
        if "locked" in str(err):  # a sweep writing right now: busy, not broken
            return None
        return f"cannot read the MLflow store {path}: {err}"
    except sqlite3.DatabaseError as err:
        return f"the MLflow store {path} is damaged ({err}); move it away or pass --tracking-uri"
    if not tables:
        return no_store_message(path) + " (the database has no tables)" if must_exist else None
    missing = sorted(MLFLOW_TABLES - tables)
    if missing:
        return (
            f"{path} is a sqlite database but not an MLflow store (missing table(s) {', '.join(missing)}); "
            "move it away or pass --tracking-uri"
        )
    return None


def _table_names(path: Path) -> set[str]:
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
    try:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        connection.close()


def check_existing_store(uri: str) -> str | None:
    """For read-only commands: a local store (sqlite file or file-store folder) must already be there and
    be an MLflow store; None for servers, which answer for themselves."""
    db = sqlite_path(uri)
    if db is not None:
        return check_sqlite_store(db, must_exist=True)
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        folder = Path(parsed.path if parsed.scheme == "file" else uri)
        return None if folder.is_dir() else no_store_message(folder)
    return None
