"""The sweep file's two errors: ConfigError, what the user reads (file, key, value, what is allowed), and
KeyedError, raised inside the schema's validators to point at a key other than the one being checked.

Their own module because every stage that refuses a file raises or catches them (reading, the schema,
validation, preflight, the CLI and the Python API), while only validation needs the schema's models."""

from __future__ import annotations

from pathlib import Path


class KeyedError(ValueError):
    """Raised inside validators to point at a key other than the one pydantic is checking (validation's
    error for it names that key)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


class ConfigError(ValueError):
    """A sweep file problem, worded for the user: file, key, value, what is allowed."""

    def __init__(self, file: str | Path, key: str, message: str) -> None:
        self.file, self.key, self.message = str(file), key, message
        where = f"{file}: {key}: " if key else f"{file}: "
        super().__init__(where + message)
