"""A training run's MLflow page leads with its loss curve.

MLflow 3.17's run page opens on its Overview, whose only box a run can fill is its description (the tag
`mlflow.note.content`, markdown; images allowed, their size attributes stripped) shown at most 100 px tall
before "Show more". fmx writes there the loss strip (orchestrator.plots.save_loss_strip, drawn to fit those
100 px) linking to the full loss curve. Both addresses are relative, so the page works on any host, port or
path prefix: the image through `get-artifact?path=…&run_uuid=…` (the address the UI's own artifact viewer
reads a file from), the link as the UI's hash route of the artifact, in model-training mode (the link opens a
new tab, which would otherwise take the browser's last mode, GenAI on a first visit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from orchestrator.plots import save_loss_curve, save_loss_strip
from orchestrator.tags import TAG_NOTE
from orchestrator.views import WORKFLOW_QUERY

LOSS_STRIP = "plots/loss_strip.png"
LOSS_CURVE = "plots/loss_curve.png"


class TrainingRun(Protocol):
    """What the loss curve needs of a training run (orchestrator.tracking.TrialRun)."""

    key: Any
    run_id: str
    experiment_id: str
    tags: dict[str, str]

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: dict[str, Any]) -> None: ...


def artifact_file(run_id: str, path: str) -> str:
    """The address the UI itself fetches a run's artifact from, relative to the UI's root."""
    return f"get-artifact?path={quote(path, safe='')}&run_uuid={run_id}"


def loss_note(experiment_id: str, run_id: str) -> str:
    """The training run's description: the loss strip, a link to the full loss curve in the Artifacts tab."""
    curve = f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/{LOSS_CURVE}?{WORKFLOW_QUERY}"
    return f"[![training loss by step]({artifact_file(run_id, LOSS_STRIP)})]({curve})"


def log_loss_curve(run: TrainingRun, losses: list[tuple[int, float]], folder: Path) -> None:
    """The loss curve and its strip under plots/, and the strip as the run's description, so the run's page
    leads with it; a description someone else wrote (in the UI, say) is kept."""
    for name, save in ((LOSS_CURVE, save_loss_curve), (LOSS_STRIP, save_loss_strip)):
        run.log_artifact(save(losses, folder / Path(name).name, title=run.key.trial_id), str(Path(name).parent))
    note = loss_note(run.experiment_id, run.run_id)
    if run.tags.get(TAG_NOTE, note) == note:
        run.set_tags({TAG_NOTE: note})
