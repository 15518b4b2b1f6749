"""The report stage of `fmx report`: the sweep's samples and trajectories read back from MLflow, the report
drawn (orchestrator.report: Markdown, plots, the papers' claims judged), logged to the sweep's report run and
linked from its view. Loaded on first use by orchestrator.api: matplotlib's import is a second that `fmx sweep`
and `fmx tables` need not pay."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from orchestrator.report import Report, build_report
from orchestrator.report_artifacts import load_samples, load_trajectories
from orchestrator.report_link import link_report
from orchestrator.tracking import log_report


def report(tracking_uri: str, sweep: str, runs: pd.DataFrame, out_dir: Path) -> Report:
    samples, data = load_samples(tracking_uri, runs)
    built = build_report(runs, out_dir, sweep, samples, load_trajectories(tracking_uri, runs), data)
    link_report(tracking_uri, sweep, log_report(tracking_uri, sweep, built.directory))
    return built
