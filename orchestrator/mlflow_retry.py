"""Retrying MLflow calls through an outage: a store that is restarting or locked is waited out, with back-off
and a line per wait, within a time budget; a wrong request or a full disk is raised at once.

Every write and read of fmx's records goes through `retrying` (or a trial's `TrialRun.retrying`, which keeps
one budget for the whole trial), so an MLflow server restarting mid-sweep loses nothing."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from orchestrator.disk import as_disk_full

T = TypeVar("T")

#: How long a trial (or the driver) keeps retrying MLflow before it gives up; an outage of minutes loses nothing.
RETRY_SECONDS_ENV = "FMX_MLFLOW_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 600.0
#: MLflow errors that no retry can mend (a wrong request, not an unreachable store).
_PERMANENT_ERRORS = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "PERMISSION_DENIED",
                     "UNAUTHENTICATED", "BAD_REQUEST", "INVALID_STATE"}  # fmt: skip


class TrackingUnavailable(RuntimeError):
    """MLflow could not be reached within the retry budget; what was to be written is kept elsewhere."""


#: What an unreachable or busy store says, whichever layer (requests, urllib3, sqlite, MLflow) words it.
_TRANSIENT_TEXT = re.compile(
    r"connection (refused|reset|aborted)|max retries exceeded|timed out|temporarily unavailable|database is locked"
    r"|remote end closed|bad gateway|service unavailable|gateway timeout|failed to establish|broken pipe"
    r"|name or service not known|response code 50[0234]|status code 50[0234]",
    re.IGNORECASE,
)
_TRANSIENT_TYPES = ("ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout", "ProtocolError", "NewConnectionError",
                    "MaxRetryError", "RemoteDisconnected", "ChunkedEncodingError")  # fmt: skip


def _is_transient(err: BaseException) -> bool:
    """An outage that waiting can mend (a server restarting, a locked sqlite file), not a wrong request or a
    damaged store, which are raised at once instead of being retried for minutes."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "error_code", None) in _PERMANENT_ERRORS:
            return False
        if isinstance(current, (ConnectionError, TimeoutError)) or type(current).__name__ in _TRANSIENT_TYPES:
            return True
        if _TRANSIENT_TEXT.search(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def retry_budget() -> float:
    try:
        return max(0.0, float(os.environ.get(RETRY_SECONDS_ENV, DEFAULT_RETRY_SECONDS)))
    except ValueError:
        return DEFAULT_RETRY_SECONDS


def retrying(
    call: Callable[[], T], what: str, budget: float | None = None, log: Callable[[str], None] = _to_stderr, where: str | None = None
) -> T:
    """Run an MLflow call, retrying with back-off (1, 2, 4 ... 30 s) while the store is unreachable (a server
    restarting, a locked sqlite file); gives up with TrackingUnavailable once `budget` seconds have passed.
    A full disk is not waited out: it raises DiskFull naming `where` (the store) at once."""
    budget = retry_budget() if budget is None else budget
    deadline = time.monotonic() + budget
    delay = 1.0
    while True:
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - MLflow raises many kinds for one outage
            full = as_disk_full(err, where)
            if full is not None:  # no wait mends a full disk; say where, at once
                raise full from err
            if not _is_transient(err):
                raise
            left = deadline - time.monotonic()
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            if left <= 0:
                raise TrackingUnavailable(f"MLflow unreachable while trying to {what} (gave up after {budget:.0f} s): {reason}") from err
            wait = min(delay, left, 30.0)
            log(f"fmx: MLflow call failed ({what}): {reason}; retrying in {wait:.0f} s")
            time.sleep(wait)
            delay *= 2
