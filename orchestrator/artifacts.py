"""A cell's evaluation artifacts (sample plots and arrays): kept on the sweep's storage as soon as they are
written, and sent to the cell's MLflow run by whoever gets there first — the trial's writer thread, the
trial's end, or the driver's repair of a trial that died. An MLflow outage therefore costs no plot: what the
run lacks is sent once the server is back (the trial's own end, or `fmx sweep FILE --resume`)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cell_store import artifacts_dir, get_file, list_files, put_files, remove_dir
from orchestrator.folders import join

if TYPE_CHECKING:
    from orchestrator.tracking import TrialRun


def keep(files: dict[str, list[Path]], cell_folder: str) -> None:
    """Store an evaluation's files ({artifact path: files}) under the cell's folder."""
    for artifact_path, paths in files.items():
        if paths:
            put_files(paths, join(artifacts_dir(cell_folder), artifact_path))


def forget(cell_folder: str) -> None:
    """A training started from scratch owns its cell's artifacts: an earlier training's go."""
    remove_dir(artifacts_dir(cell_folder))


def send_missing(run: TrialRun, cell_folder: str) -> list[str]:
    """Upload each kept artifact the run does not hold yet; the names sent ('plots/x.png')."""
    stored = list_files(artifacts_dir(cell_folder))
    sent: list[str] = []
    by_path: dict[str, list[str]] = {}
    for name in stored:
        folder, _, file = name.rpartition("/")
        by_path.setdefault(folder, []).append(file)
    with tempfile.TemporaryDirectory() as tmp:
        for artifact_path, files in sorted(by_path.items()):
            listed = run.retrying(lambda p=artifact_path: run.client.list_artifacts(run.run_id, p), f"list the run's {artifact_path}")
            held = {Path(a.path).name for a in listed}
            for file in files:
                if file in held:
                    continue
                local = get_file(join(artifacts_dir(cell_folder), artifact_path, file), Path(tmp))
                run.log_artifact(local, artifact_path or None)
                sent.append(f"{artifact_path}/{file}")
    return sent
