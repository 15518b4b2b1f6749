"""MLflow: where runs go, one experiment per sweep, one run per training trial (found again on resume).

The client API is used instead of the fluent `mlflow.start_run` so that several trials in one
process (Tune reuses actors) never share an "active run".
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from orchestrator.plan import TrainingKey

EVALUATIONS_ARTIFACT = "evaluations.json"
TAG_SWEEP = "fmx.sweep"
TAG_TRIAL = "fmx.trial_id"
TAG_ERROR = "fmx.error"
TAG_NODE = "fmx.node_id"


class TrackingError(RuntimeError):
    """The tracking URI is unusable (unreachable server, missing folder)."""


def resolve_tracking_uri(cli_uri: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else a sqlite store in the working directory."""
    uri = cli_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def default_artifact_location(uri: str, sweep: str) -> str | None:
    """Absolute artifact folder for a local store (Ray workers have another cwd); servers choose their own."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https", "databricks"):
        return None
    if parsed.scheme == "sqlite":
        db = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:////") else Path(parsed.path.lstrip("/"))
        base = db.resolve().parent
    else:
        base = Path.cwd()
    return (base / "mlartifacts" / sweep).as_uri()


def check_tracking_uri(uri: str, timeout: float = 3.0) -> None:
    """Fail fast (seconds, not MLflow's minutes of retries) when the store cannot be reached."""
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
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.parent.is_dir():
            raise TrackingError(f"the folder of the MLflow database {db} does not exist")
    elif parsed.scheme not in ("", "file", "databricks"):
        raise TrackingError(f"unsupported tracking URI scheme '{parsed.scheme}' in {uri}")


def client(uri: str):  # -> mlflow.MlflowClient; imported lazily, `import mlflow` costs ~1.4 s
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, sweep: str) -> str:
    """The sweep's experiment id, creating it (with an absolute artifact folder) the first time."""
    mlflow_client = client(uri)
    found = mlflow_client.get_experiment_by_name(sweep)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(found.experiment_id)
        return found.experiment_id
    return mlflow_client.create_experiment(sweep, artifact_location=default_artifact_location(uri, sweep))


def find_experiment(uri: str, sweep: str) -> str | None:
    found = client(uri).get_experiment_by_name(sweep)
    return None if found is None else found.experiment_id


class TrialRun:
    """The MLflow run of one training trial: created once, found again by its tags on resume or retry."""

    def __init__(self, uri: str, experiment_id: str, sweep: str, key: TrainingKey, params: dict[str, Any]) -> None:
        self.client = client(uri)
        query = f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_TRIAL}` = '{key.trial_id}'"
        existing = self.client.search_runs([experiment_id], filter_string=query, max_results=1)
        if existing:
            self.run_id = existing[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {TAG_SWEEP: sweep, TAG_TRIAL: key.trial_id, "mlflow.runName": key.trial_id}
            self.run_id = self.client.create_run(experiment_id, tags=tags, run_name=key.trial_id).info.run_id
            self._log_params(params)

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._log_batch([(k, v, step) for k, v in metrics.items()])

    def log_history(self, name: str, points: list[tuple[int, float]]) -> None:
        """A whole curve (e.g. the training loss) in a few requests instead of one per point."""
        self._log_batch([(name, v, step) for step, v in points])

    def _log_batch(self, triples: list[tuple[str, float | None, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(s)) for k, v, s in triples if v is not None and math.isfinite(float(v))]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_evaluations(self, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
        """The rows are the source of truth for the Parquet tables; metrics mirror them for the UI."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / EVALUATIONS_ARTIFACT
            path.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=_json_default))
            self.client.log_artifact(self.run_id, str(path))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str, error: str | None = None) -> None:
        if error:
            self.client.set_tag(self.run_id, TAG_ERROR, error[:4000])
        self.client.set_terminated(self.run_id, status=status)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def read_evaluations(uri: str, experiment_id: str) -> list[tuple[Any, dict[str, Any]]]:
    """(run, evaluations.json content) for every fmx run of the experiment that has logged its rows."""
    mlflow_client = client(uri)
    runs = mlflow_client.search_runs([experiment_id], filter_string=f"tags.`{TAG_TRIAL}` != ''", max_results=50000)
    out = []
    for run in runs:
        try:
            text = _load_text(mlflow_client, run)
        except Exception:  # a trial that never reached its evaluations (driver died before it ran)
            continue
        out.append((run, json.loads(text)))
    return out


def _load_text(mlflow_client: Any, run: Any) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow_client.download_artifacts(run.info.run_id, EVALUATIONS_ARTIFACT, tmp)
        return Path(local).read_text()


def log_report(uri: str, sweep: str, directory: Path) -> str:
    """One 'report' run per sweep (replaced on every report) holding the Markdown and the plots."""
    mlflow_client = client(uri)
    experiment_id = ensure_experiment(uri, sweep)
    query = f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`fmx.report` = '1'"
    for old in mlflow_client.search_runs([experiment_id], filter_string=query):
        mlflow_client.delete_run(old.info.run_id)
    tags = {TAG_SWEEP: sweep, "fmx.report": "1", "mlflow.runName": "report"}
    run_id = mlflow_client.create_run(experiment_id, tags=tags, run_name="report").info.run_id
    mlflow_client.log_artifacts(run_id, str(directory), "report")
    mlflow_client.set_terminated(run_id)
    return run_id
