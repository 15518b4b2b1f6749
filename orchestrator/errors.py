"""How a sweep command ends when it cannot finish: one line for the user and the exit code it means.

The pipeline decides both (bad input is 2, a store or disk that gave out is 1, an interruption 130); the
CLI only prints the line and exits with the code.
"""

from __future__ import annotations


class SweepStopped(RuntimeError):
    """The sweep ended early; `str(err)` is the one line to show."""

    exit_code = 1
    label = "error"


class SweepRefused(SweepStopped):
    """Bad input or a state the sweep cannot start from: nothing was started or written."""

    exit_code = 2


class SweepInterrupted(SweepStopped):
    """Ctrl-C (or a stop signal) outside Tune's own handling; what ran is resumable."""

    exit_code = 130
    label = "interrupted"


class CheckpointError(ValueError):
    """A checkpoint that is not fmx's, is of another trial, or holds more than tensors and plain data."""


class FewerRowsError(RuntimeError):
    """A rebuild would replace runs.parquet with fewer rows than it holds: the store lost some."""


class CompareError(ValueError):
    """A method or metric the sweep does not have; the message lists what it has."""


def last_line(text: str) -> str | None:
    """The last non-empty line of an error's text: a remote traceback ends with its cause."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


class NoGpuError(RuntimeError):
    """`fmx train` of a sweep that asks for a GPU (train.use_gpu) on a machine where PyTorch sees none."""
