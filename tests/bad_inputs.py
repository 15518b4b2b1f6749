"""Bad inputs shared by the config-level and the CLI tests."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

#: A "billion laughs" YAML file: 9 lists of 9 aliases of the level below, 9**9 strings once expanded, in
#: under 800 bytes. Expanding it once took 187 s and 4 GB before a MemoryError.
BILLION_LAUGHS = "lol: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{i}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)
MLFLOW_TABLES = ("alembic_version", "experiments", "runs")


def make_store(path: Path, tables: tuple[str, ...] = MLFLOW_TABLES) -> Path:
    """A sqlite file with these tables (MLflow's by default: what the store check looks at), made without
    MLflow's seconds of set-up."""
    with sqlite3.connect(path) as db:
        for table in tables:
            db.execute(f"CREATE TABLE {table} (x)")
    db.close()
    return path


class CodeRunningPickle:
    """Pickled, an object whose loading runs a command (it creates `marker`): what a data file must never do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
