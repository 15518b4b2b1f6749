"""A finished sweep's sample artifacts, read back from MLflow for `fmx report`: the final step's samples and
reference-solve trajectories of each method's first seed.

Artifacts come from the sweep's store, which is untrusted: arrays are loaded without pickle, and a run
without the artifact (an older fmx, a failed trial) is skipped rather than failing the report."""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd

from orchestrator.plots import DATA_PANEL
from orchestrator.tables import method_label
from orchestrator.tracking import client


def _final_artifacts(tracking_uri: str, runs: pd.DataFrame, prefix: str) -> dict[str, dict[str, np.ndarray]]:
    """`samples/<prefix>_step<final>.npz` of each seed-0 trial, by method label (trials without one skipped)."""
    mlflow_client = client(tracking_uri)
    out: dict[str, dict[str, np.ndarray]] = {}
    final = runs["train_step"].max()
    for _, row in runs[runs["seed"] == runs["seed"].min()].drop_duplicates("trial_id").iterrows():
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow_client.download_artifacts(row["mlflow_run_id"], f"samples/{prefix}_step{final}.npz", tmp)
                # allow_pickle=False (numpy's default, said here on purpose): an artifact from a shared store
                # yields plain arrays only; one holding pickled objects raises instead of running anything.
                with np.load(local, allow_pickle=False) as arrays:
                    out[method_label(row["path"], row["objective"], row["coupling"], row.get("train_axes"))] = dict(arrays)
        except Exception:  # an older run, or a failed trial, has no such artifact
            continue
    return out


def load_samples(tracking_uri: str, runs: pd.DataFrame) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray | None]:
    """Final-step samples of seed-0 trials (the best-tolerance adaptive setting), from MLflow artifacts, and the
    data's own samples stored beside them (None where the trials stored none: runs of an older fmx)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    data = None
    for method, arrays in _final_artifacts(tracking_uri, runs, "samples").items():
        data = arrays.pop(DATA_PANEL, data)
        label = next((k for k in sorted(arrays) if "tol" in k), next(iter(sorted(arrays)), None))
        if label is not None:
            out[method] = {label: arrays[label]}  # the setting label travels with the array (the panel names it)
    return out, data


def load_trajectories(tracking_uri: str, runs: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Final-step reference-solve states at several t (2-D sweeps), from MLflow artifacts."""
    return _final_artifacts(tracking_uri, runs, "trajectory")
