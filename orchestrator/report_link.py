"""The sweep's experiment description links to its latest `fmx report` run: what MLflow's runs page cannot show
(means with 95 % intervals over seeds, the paper's claims judged paired by seed) is that run's report.md, one
click from the comparison view."""

from __future__ import annotations

from orchestrator.tags import TAG_NOTE
from orchestrator.tracking import REPORT_EXPERIMENT, client
from orchestrator.views import WORKFLOW_QUERY

#: Starts the line fmx appends to the sweep's description; everything from it on is fmx's and replaced.
LINK_MARK = "\n\n**Intervals and verdicts:** "


def report_page(report_experiment_id: str, run_id: str) -> str:
    """The UI's address of the report run's report.md, relative to the UI's root (a hash route), in
    model-training mode: MLflow opens a description's link in a new tab, which would otherwise take the
    browser's last mode (GenAI on a first visit)."""
    return f"#/experiments/{report_experiment_id}/runs/{run_id}/artifacts/report/report.md?{WORKFLOW_QUERY}"


def link_report(uri: str, sweep: str, run_id: str) -> None:
    """Append (or replace) the link to the report run `run_id` in the sweep experiment's description, after
    the sweep file's own description; `fmx sweep` restores the bare description until the next report."""
    store = client(uri)
    experiment = store.get_experiment_by_name(sweep)
    report = store.get_experiment_by_name(REPORT_EXPERIMENT.format(sweep=sweep))
    if experiment is None or report is None:
        return
    description = experiment.tags.get(TAG_NOTE, "").split(LINK_MARK)[0]
    link = f"[report.md]({report_page(report.experiment_id, run_id)}) of `fmx report {sweep}`: means with 95 % "
    link += "intervals over seeds, and the paper's claims judged paired by seed."
    store.set_experiment_tag(experiment.experiment_id, TAG_NOTE, description + LINK_MARK + link)
