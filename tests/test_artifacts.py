"""A cell's evaluation artifacts are kept on the sweep's storage and sent to its MLflow run once: the files
a trial could not send (an outage, a killed worker) reach the run from the storage later."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator.artifacts import forget, keep, send_missing
from orchestrator.cell_store import artifacts_dir, get_file, list_files
from orchestrator.plan import TrainingKey
from orchestrator.tracking import TrialRun, ensure_experiment


def _files(folder: Path) -> dict[str, list[Path]]:
    folder.mkdir()
    (folder / "samples_step10.png").write_bytes(b"png-10")
    (folder / "samples_step10.npz").write_bytes(b"npz-10")
    return {"plots": [folder / "samples_step10.png"], "samples": [folder / "samples_step10.npz"]}


@pytest.mark.parametrize("as_uri", [False, True], ids=["local_folder", "file_uri"])
def test_kept_artifacts_reach_the_run_once_and_a_fresh_training_forgets_them(tmp_path: Path, as_uri: bool):
    cell = (tmp_path / "storage" / "cells" / "abc").as_uri() if as_uri else str(tmp_path / "storage" / "cells" / "abc")
    keep(_files(tmp_path / "written"), cell)
    assert list_files(artifacts_dir(cell)) == ["plots/samples_step10.png", "samples/samples_step10.npz"]
    assert get_file(f"{artifacts_dir(cell)}/plots/samples_step10.png", tmp_path / "fetched").read_bytes() == b"png-10"

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = ensure_experiment(uri, "artifacts")
    run = TrialRun(uri, experiment, "artifacts", TrainingKey("ot", "fm", "independent", 0), {}, "abc")
    run.log_artifact(tmp_path / "written" / "samples_step10.png", "plots")  # the live logger got this one out
    assert send_missing(run, cell) == ["samples/samples_step10.npz"]
    assert send_missing(run, cell) == []  # nothing twice
    client = MlflowClient(uri)
    held = {a.path for folder in ("plots", "samples") for a in client.list_artifacts(run.run_id, folder)}
    assert held == {"plots/samples_step10.png", "samples/samples_step10.npz"}

    forget(cell)
    assert list_files(artifacts_dir(cell)) == []
    assert send_missing(run, cell) == []


def test_a_file_being_written_is_not_sent(tmp_path: Path):
    cell = str(tmp_path / "cells" / "abc")
    keep(_files(tmp_path / "written"), cell)
    (Path(artifacts_dir(cell)) / "plots" / ".incoming-samples_step20.png").write_bytes(b"half")
    assert list_files(artifacts_dir(cell)) == ["plots/samples_step10.png", "samples/samples_step10.npz"]
    assert list_files(str(tmp_path / "no" / "such")) == []
