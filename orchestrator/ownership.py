"""One sweep folder per sweep name and store: the folder that first runs a sweep owns its experiment (a tag
naming host and results folder); a sweep of the same name from another folder is refused, since both would
train the shared cells into the same runs and each folder's runs.parquet would hold the other's rows.

Refused rather than kept apart: the experiment is the sweep's identity in the store (the MLflow UI, `fmx ui`,
`fmx tables NAME`), and two files under one name are two sweeps a reader could not tell apart. An owner
folder that is gone (moved or deleted, on this host) hands the sweep over to the next folder that runs it."""

from __future__ import annotations

import socket
from pathlib import Path

from orchestrator.sweep_guard import STATE_FILE
from orchestrator.tags import TAG_FOLDER
from orchestrator.mlflow_retry import retrying
from orchestrator.tracking import client, store_location


class OwnedElsewhere(RuntimeError):
    """The sweep's experiment belongs to another sweep folder; worded for the user."""


def folder_id(results: Path) -> str:
    return f"{socket.gethostname()}:{results.absolute()}"


def _gone(owner: str) -> bool:
    """Whether the owning folder is gone for good: on this host, without the sweep's state note."""
    host, _, folder = owner.partition(":")
    return host == socket.gethostname() and not (Path(folder) / STATE_FILE).exists()


def check_owner(uri: str, experiment_id: str, sweep: str, results: Path) -> None:
    """OwnedElsewhere where another folder, still there, owns the sweep's experiment."""
    mlflow_client = client(uri)
    experiment = retrying(lambda: mlflow_client.get_experiment(experiment_id), "read the sweep's experiment", where=store_location(uri))
    owner = experiment.tags.get(TAG_FOLDER)
    if owner and owner != folder_id(results) and not _gone(owner):
        raise OwnedElsewhere(
            f"sweep '{sweep}' in this store belongs to the sweep folder {owner.partition(':')[2].removesuffix('/results/' + sweep)} "
            f"(host {owner.partition(':')[0]}): run it there, or give this file another name (or --tracking-uri)"
        )


def claim(uri: str, experiment_id: str, results: Path) -> None:
    """Make this folder the owner of the sweep's experiment."""
    mlflow_client = client(uri)
    retrying(lambda: mlflow_client.set_experiment_tag(experiment_id, TAG_FOLDER, folder_id(results)),
             "mark the sweep's folder", where=store_location(uri))  # fmt: skip
