"""MLflow: where runs go, one experiment per sweep, one run per training trial (found again on resume).

The client API is used instead of the fluent `mlflow.start_run` so that several trials in one
process (Tune reuses actors) never share an "active run".
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from orchestrator.plan import TrainingKey
from orchestrator.records import json_default
from orchestrator.rows import EvalRow
from orchestrator.mlflow_retry import TrackingUnavailable, retrying
from orchestrator.store_check import check_sqlite_store, sqlite_path
from orchestrator.tags import (
    TAG_CELL, TAG_CURRENT, TAG_ERROR, TAG_EVALUATION, TAG_INTERRUPTED, TAG_NOTE, TAG_PARENT, TAG_REPORT, TAG_RUN_NAME,
    TAG_SWEEP, TAG_TRIAL, search_all,
)  # fmt: skip

if TYPE_CHECKING:
    from mlflow import MlflowClient

EVALUATIONS_ARTIFACT = "evaluations.json"
T = TypeVar("T")
#: Where `fmx report` logs, apart from the trial comparisons (a sweep name cannot contain "/").
REPORT_EXPERIMENT = "{sweep}/report"


class TrackingError(RuntimeError):
    """The tracking URI is unusable (unreachable server, missing folder)."""


def resolve_tracking_uri(cli_uri: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else a sqlite store in the working directory."""
    uri = cli_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def store_location(uri: str) -> str:
    """Where a store keeps its data, for messages: the sqlite file, else the URI itself."""
    db = sqlite_path(uri)
    return str(db) if db is not None else uri


def default_artifact_location(uri: str, sweep: str) -> str | None:
    """Absolute artifact folder for a local store (Ray workers have another cwd); servers choose their own."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https", "databricks"):
        return None
    if parsed.scheme == "sqlite":
        db = sqlite_path(uri)
        base = (db or Path(parsed.path.lstrip("/"))).resolve().parent
    else:
        base = Path.cwd()
    return (base / "mlartifacts" / sweep).as_uri()


def check_tracking_uri(uri: str, timeout: float = 3.0) -> None:
    """Fail fast (seconds, not MLflow's minutes of retries) when the store cannot be reached."""
    try:
        _check_tracking_uri(uri, timeout)
    except (OSError, ValueError) as err:  # a malformed URL, a path too long for the filesystem
        raise TrackingError(f"unusable tracking URI {uri[:200]}: {getattr(err, 'strerror', None) or err}") from None


def _check_tracking_uri(uri: str, timeout: float) -> None:
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
                if response.status != 200:
                    raise TrackingError(f"MLflow server at {uri} answered /health with HTTP {response.status}")
        except (urllib.error.URLError, OSError, socket.timeout) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(f"cannot reach the MLflow server at {uri}: {reason}") from None
    elif parsed.scheme == "sqlite":
        db = sqlite_path(uri) or Path(parsed.path)
        if not db.parent.is_dir():
            raise TrackingError(f"the folder of the MLflow database {db} does not exist")
        problem = check_sqlite_store(db)  # garbage bytes or another program's database: say so now
        if problem:
            raise TrackingError(problem)
    elif parsed.scheme not in ("", "file", "databricks"):
        raise TrackingError(f"unsupported tracking URI scheme '{parsed.scheme}' in {uri}")


def client(uri: str) -> MlflowClient:
    """MLflow's client for `uri` (MLflow imported here, at first use: `import mlflow` costs ~1.4 s)."""
    # fmx retries whole calls itself (`retrying`), with a time budget and a log line per wait.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


#: How long a sweep waits for another process that is creating (migrating) the same sqlite store.
STORE_LOCK_SECONDS = 300.0


@contextmanager
def store_creation_lock(uri: str) -> Iterator[None]:
    """Serialize the first use of a local sqlite store between processes: two sweeps (of any files) started
    at once on a fresh `mlflow.db` otherwise race MLflow's alembic migrations and one dies ("Online migration
    expected to match one row"). The lock file lives in the temp folder, keyed by the database's real path,
    so nothing is added beside the store; servers migrate their own store, so they need none."""
    from filelock import FileLock, Timeout

    db = sqlite_path(uri)
    if db is None:
        yield
        return
    folder = Path(tempfile.gettempdir()) / "fmx-locks"
    folder.mkdir(mode=0o1777, exist_ok=True)
    digest = hashlib.sha256(str(db.resolve()).encode()).hexdigest()[:16]
    lock = FileLock(str(folder / f"mlflow-store-{digest}.lock"), timeout=STORE_LOCK_SECONDS, mode=0o666)
    try:
        lock.acquire()
    except Timeout:
        raise TrackingError(f"another process has been creating the MLflow store {db} for over {STORE_LOCK_SECONDS:.0f} s") from None
    try:
        yield
    finally:
        lock.release()


def ensure_experiment(uri: str, sweep: str, description: str | None = None) -> str:
    """The sweep's experiment id, creating it (with an absolute artifact folder) the first time; the sweep
    file's description becomes the experiment's description (MLflow's note) in the UI. The store's first
    use is serialized with other processes (`store_creation_lock`)."""
    with store_creation_lock(uri):
        return _ensure_experiment(uri, sweep, description)


def _ensure_experiment(uri: str, sweep: str, description: str | None) -> str:
    mlflow_client = client(uri)

    def ensure() -> str:
        found = mlflow_client.get_experiment_by_name(sweep)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                mlflow_client.restore_experiment(found.experiment_id)
            if description and found.tags.get(TAG_NOTE) != description:
                mlflow_client.set_experiment_tag(found.experiment_id, TAG_NOTE, description)
            return found.experiment_id
        try:
            tags = {TAG_NOTE: description} if description else None
            folder = default_artifact_location(uri, sweep.replace("/", "-"))
            return mlflow_client.create_experiment(sweep, artifact_location=folder, tags=tags)
        except Exception as err:  # another sweep created it meanwhile: take that one
            if getattr(err, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
            return ensure()

    return retrying(ensure, "create the sweep's experiment", where=store_location(uri))


def find_experiment(uri: str, sweep: str) -> str | None:
    found = client(uri).get_experiment_by_name(sweep)
    return None if found is None else found.experiment_id


def existing_experiment(uri: str, sweep: str) -> str | None:
    """The sweep's experiment id where the store exists already (a missing sqlite file is not created here,
    and a store being created by another process is waited for), else None."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return None
    with store_creation_lock(uri):
        return retrying(lambda: find_experiment(uri, sweep), "find the sweep's experiment", where=store_location(uri))


class TrialRun:
    """The MLflow run of one training trial: created once, found again by its tags on resume or retry.

    Every call retries while MLflow is unreachable (`retrying`). Metric points carry a timestamp derived from
    the run's start and the step, so logging the same point again (a retried trial, a repair by the driver)
    is recognised by the store as the same point instead of adding one."""

    def __init__(
        self, uri: str, experiment_id: str, sweep: str, key: TrainingKey, params: dict[str, Any], cell: str,
        mark_running: bool = True,
    ) -> None:  # fmt: skip
        self.client, self.uri, self._gave_up = client(uri), uri, False
        self.key, self.where, self.experiment_id, self.cell = key, store_location(uri), experiment_id, cell
        existing = self.retrying(lambda: find_trial_run(self.client, experiment_id, cell), "find the trial's run")
        if existing is not None:
            self.run_id, self.start_ms = existing.info.run_id, int(existing.info.start_time)
            self.tags = dict(existing.data.tags)
            if mark_running:
                self.retrying(lambda: self.client.update_run(self.run_id, status="RUNNING"), "mark the run running")
        else:
            tags = {TAG_SWEEP: sweep, TAG_TRIAL: key.trial_id, TAG_CELL: cell, TAG_CURRENT: "true", TAG_RUN_NAME: key.trial_id}
            info = self.retrying(lambda: self.client.create_run(experiment_id, tags=tags, run_name=key.trial_id).info, "create a run")
            self.run_id, self.start_ms, self.tags = info.run_id, int(info.start_time), tags
            self._log_params(params)

    def retrying(self, call: Callable[[], T], what: str) -> T:
        """`retrying`, with one budget for the trial's run rather than one per call: once a call has waited out
        the budget, the next calls try once each until one gets through. Each used to wait the budget out
        again, so a trial that lost its store took a multiple of it to end (a 3 s budget, 15 s; at the
        default 600 s, most of an hour); the artifacts it could not send are kept for the driver meanwhile."""
        try:
            result = retrying(call, what, budget=0.0 if self._gave_up else None, where=self.where)
        except TrackingUnavailable:
            self._gave_up = True
            raise
        self._gave_up = False
        return result

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            batch = items[i : i + 100]
            self.retrying(lambda batch=batch: self.client.log_batch(self.run_id, params=batch), "log params")

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.retrying(lambda k=k, v=v: self.client.set_tag(self.run_id, k, str(v)), "set a tag")
            self.tags[k] = str(v)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.log_points([(k, v, step) for k, v in metrics.items()])

    def log_history(self, name: str, points: list[tuple[int, float]]) -> None:
        """A whole curve (e.g. the training loss) in a few requests instead of one per point."""
        self.log_points([(name, v, step) for step, v in points])

    def log_points(self, triples: list[tuple[str, float | None, int]]) -> None:
        """(name, value, step) points, 1000 a request; non-finite and missing values are left out."""
        from mlflow.entities import Metric

        items = [
            Metric(k, float(v), self.start_ms + int(s), int(s))
            for k, v, s in triples
            if v is not None and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 1000):
            batch = items[i : i + 1000]
            self.retrying(lambda batch=batch: self.client.log_batch(self.run_id, metrics=batch), "log metrics")

    def log_evaluations(self, rows: list[EvalRow], summary: dict[str, Any]) -> None:
        """evaluations.json: the rows, source of truth for the Parquet tables (the child runs mirror them)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / EVALUATIONS_ARTIFACT
            content = {"summary": summary, "rows": [row.as_dict() for row in rows]}
            path.write_text(json.dumps(content, indent=1, default=json_default))
            self.retrying(lambda: self.client.log_artifact(self.run_id, str(path)), "log the evaluation rows")

    def read_evaluations(self) -> dict[str, Any] | None:
        """This run's evaluations.json (summary and rows), or None where it has none yet."""
        run = self.retrying(lambda: self.client.get_run(self.run_id), "read the trial's run")
        return self.retrying(lambda: load_evaluations(self.client, run), "read the evaluation rows")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.retrying(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path), f"log {Path(path).name}")

    def finish(self, status: str, error: str | None = None, interrupted: bool = False) -> None:
        """End the run FINISHED or FAILED, with its reason; a run that succeeds on a retry loses the old reason."""
        if error:
            self.set_tags({TAG_ERROR: error[:4000]})
        if interrupted:
            self.set_tags({TAG_INTERRUPTED: "1"})
        for stale in [t for t in (TAG_ERROR, TAG_INTERRUPTED) if t in self.tags]:
            if (stale == TAG_ERROR and not error) or (stale == TAG_INTERRUPTED and not interrupted):
                self.retrying(lambda stale=stale: self.client.delete_tag(self.run_id, stale), "clear an old failure tag")
                self.tags.pop(stale, None)
        self.retrying(lambda: self.client.set_terminated(self.run_id, status=status), "end the run")


def find_trial_run(mlflow_client: Any, experiment_id: str, cell: str) -> Any | None:
    """The run of a training cell, by its content key (one per cell; deleted runs are not searched)."""
    found = mlflow_client.search_runs([experiment_id], filter_string=f"tags.`{TAG_CELL}` = '{cell}'", max_results=1)
    return found[0] if found else None


def read_evaluations(uri: str, experiment_id: str, current_only: bool = True) -> list[tuple[Any, dict[str, Any]]]:
    """(run, evaluations.json content) for every fmx training run of the experiment that has logged its rows;
    `current_only`: only the cells and evaluations the sweep file asked for last (TAG_CURRENT). An
    unreachable store is retried, then raises: it must never read as 'no rows'."""
    mlflow_client = client(uri)
    where = store_location(uri)
    query = f"tags.`{TAG_TRIAL}` != ''" + (f" and tags.`{TAG_CURRENT}` = 'true'" if current_only else "")
    runs = retrying(lambda: search_all(mlflow_client, experiment_id, query), "list the sweep's runs", where=where)
    left_out: set[tuple[str, str]] = set()
    if current_only:
        query = f"tags.`{TAG_EVALUATION}` != '' and tags.`{TAG_CURRENT}` = 'false'"
        stale = retrying(lambda: search_all(mlflow_client, experiment_id, query), "list the left-out evaluations", where=where)
        left_out = {(r.data.tags.get(TAG_PARENT, ""), r.data.tags[TAG_EVALUATION]) for r in stale}
    out = []
    for run in runs:
        content = retrying(lambda run=run: load_evaluations(mlflow_client, run), "read a run's evaluation rows", where=where)
        if content is None:
            continue
        if left_out:
            rows = [r for r in content["rows"] if (run.info.run_id, EvalRow.from_dict(r).evaluation_key) not in left_out]
            content = {**content, "rows": rows}
        out.append((run, content))
    return out


class DamagedRun(LookupError):
    """A training run's evaluations.json is there but is not a record of rows (a hand edit, a broken upload)."""


def load_evaluations(mlflow_client: Any, run: Any) -> dict[str, Any] | None:
    """The run's evaluations.json ({"summary", "rows"}), or None where the run has none yet (its trial never
    got that far). Each row is read as an `EvalRow` here, so a damaged file is one `DamagedRun` naming the run,
    never a traceback later (or rows silently taken as missing and computed again)."""
    names = {Path(a.path).name for a in mlflow_client.list_artifacts(run.info.run_id)}
    if EVALUATIONS_ARTIFACT not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow_client.download_artifacts(run.info.run_id, EVALUATIONS_ARTIFACT, tmp)
        raw = Path(local).read_bytes()
    try:
        content = json.loads(raw.decode())
        if not isinstance(content, dict) or not isinstance(content.get("rows"), list):
            raise ValueError("not an object with a list of rows")
        if not isinstance(content.get("summary", {}), dict):
            raise ValueError("its summary is not an object")
        content["rows"] = _unique_rows(content)
    except Exception as err:  # noqa: BLE001 - reading rows is pure: whatever it raises, the file is damaged
        why = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}" if str(err) else type(err).__name__
        raise DamagedRun(
            f"MLflow run {run.info.run_id} ({run.info.run_name}): its {EVALUATIONS_ARTIFACT} cannot be read ({why}); "
            "delete that run (MLflow UI) and run the sweep again to retrain its cell"
        ) from None
    return content


def _unique_rows(content: dict[str, Any]) -> list[dict[str, Any]]:
    """The file's rows, each read as an `EvalRow` with the summary's trial fields (a value of the wrong type is
    a ValueError) and once per evaluation key: a row written twice is one row; two different rows of one key
    are a damaged file (which one holds is not known)."""
    summary = {k: v for k, v in content.get("summary", {}).items() if k != "error"}
    kept: dict[str, dict[str, Any]] = {}
    for item in content["rows"]:
        if not isinstance(item, dict):
            raise ValueError(f"a row is {type(item).__name__}, not an object")
        key = EvalRow.from_dict({**summary, **item}).evaluation_key  # reads the setting too, built on first use
        if key in kept and kept[key] != item:
            raise ValueError(f"two different rows of evaluation {key}")
        kept[key] = item
    return list(kept.values())


def log_report(uri: str, sweep: str, directory: Path) -> str:
    """One 'report' run per sweep (replaced on every report) holding the Markdown and the plots, in an experiment
    of its own so it never shows among the trials being compared."""
    mlflow_client = client(uri)
    experiment_id = ensure_experiment(uri, REPORT_EXPERIMENT.format(sweep=sweep), f"`fmx report {sweep}`: tables and plots")
    query = f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_REPORT}` = '1'"
    for old in mlflow_client.search_runs([experiment_id], filter_string=query):
        mlflow_client.delete_run(old.info.run_id)
    tags = {TAG_SWEEP: sweep, TAG_REPORT: "1", TAG_RUN_NAME: "report"}
    run_id = mlflow_client.create_run(experiment_id, tags=tags, run_name="report").info.run_id
    mlflow_client.log_artifacts(run_id, str(directory), "report")
    mlflow_client.set_terminated(run_id)
    return run_id
