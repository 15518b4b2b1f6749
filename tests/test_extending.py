"""Extending fmx touches one place: a new evaluation metric is one field of `EvalRow` plus the code that
computes it, and a new objective is one class in fm_core/objectives.py. Shown end to end on a copy of fmx's
source in which exactly those files are edited: a real sweep (real Ray, a real MLflow store), then the
metric is found in runs.parquet, the MLflow child runs, the printed table, `fmx compare --metric` and the
comparison view, and the objective trains, evaluates and is labelled in the tables and in `fmx compare`.
"""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from orchestrator.views import VIEW_TAG
from tests.cli_helpers import FMX, REPO, cleanup_ray_tmp, fmx_env

pytestmark = pytest.mark.slow

#: The new metric: a field of the row, and its computation where the other sample metrics are computed.
ROW_FIELD_AFTER = '    ode_error: float = _col("float64", "value", math.nan, mlflow="metric"'
NEW_FIELD = '    sample_spread: float = _col("float64", "value", math.nan, mlflow="metric")  # a test\'s metric\n'
COMPUTED_AT = "sample_metric=metric, sample_metric_name=metric_name, ode_error=error, eval_seconds=seconds,"
COMPUTATION = "sample_spread=float(x.std()), "
#: The new objective: one class.
NEW_OBJECTIVE = '''

class DoubledFlowMatching(FlowMatching):
    """Flow matching with its loss doubled (a test's objective: same minimiser, another name and label)."""

    name: ClassVar[str] = "fm2x"
    label: ClassVar[str] = "FM2x"

    def loss(self, model: nn.Module, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return 2 * super().loss(model, x0, x1, generator)
'''
SWEEP = """\
name: extend
dataset: {name: 8gaussians}
model: {kind: mlp, hidden: 16, depth: 2}
train: {steps: 40, batch_size: 64, checkpoint_every: 40, log_every: 20}
eval: {samples: 128, likelihood_points: 16, reference_tol: 1.0e-4}
grid: {path: [ot], objective: [fm, fm2x], seed: [0, 1], solver: [euler], nfe: [4]}
max_concurrent_trials: 1  # see tests/conftest.py: ONE_TRIAL_AT_A_TIME
"""


def _insert_after(path: Path, anchor: str, text: str) -> None:
    """`text` as a line of its own after the line that starts with `anchor`."""
    lines = path.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith(anchor))
    path.write_text("".join([*lines[: at + 1], text, *lines[at + 1 :]]))


def _insert_before(path: Path, anchor: str, text: str) -> None:
    """`text` just before the one place `anchor` occurs."""
    source = path.read_text()
    assert source.count(anchor) == 1, anchor
    path.write_text(source.replace(anchor, text + anchor))


def _source_copy(root: Path) -> Path:
    src = root / "src"
    for package in ("fm_core", "orchestrator"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    _insert_after(src / "orchestrator" / "rows.py", ROW_FIELD_AFTER, NEW_FIELD)
    _insert_before(src / "orchestrator" / "evaluation.py", COMPUTED_AT, COMPUTATION)
    (src / "fm_core" / "objectives.py").write_text((src / "fm_core" / "objectives.py").read_text() + NEW_OBJECTIVE)
    return src


def _edited_files(src: Path) -> set[str]:
    """The files of the copy that differ from fmx's own (none added, none removed)."""
    edited: set[str] = set()
    for package in ("fm_core", "orchestrator"):
        for path in (REPO / package).rglob("*.py"):
            copy = src / path.relative_to(REPO)
            assert copy.exists(), copy
            if not filecmp.cmp(path, copy, shallow=False):
                edited.add(str(path.relative_to(REPO)))
    return edited


def test_a_new_metric_field_and_a_new_objective_class_reach_every_output_with_no_other_file_edited(tmp_path: Path):
    src = _source_copy(tmp_path)
    assert _edited_files(src) == {"orchestrator/rows.py", "orchestrator/evaluation.py", "fm_core/objectives.py"}
    work = tmp_path / "work"
    work.mkdir()
    (work / "extend.yaml").write_text(SWEEP)
    env = fmx_env({"PYTHONPATH": str(src)})
    try:
        def fmx(*args: str) -> subprocess.CompletedProcess:
            done = subprocess.run([FMX, *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
            return done

        swept = fmx("sweep", "extend.yaml")
        tables = fmx("tables", "extend", "--markdown")
        compared = fmx("compare", "extend", "FM-OT", "FM2x-OT", "--metric", "sample_spread")
    finally:
        cleanup_ray_tmp(env)
    # The code that ran is the edited copy's (a row of the installed fmx has no such column).
    runs = pd.read_parquet(work / "results" / "extend" / "runs.parquet")
    assert str(runs["sample_spread"].dtype) == "float64" and runs["sample_spread"].gt(0).all(), runs
    assert (runs["status"] == "ok").all() and len(runs) == 4
    # The objective: trained, evaluated, and labelled as its class says.
    assert sorted(set(runs["objective"])) == ["fm", "fm2x"]
    assert "FM2x-OT" in swept.stdout and "FM2x-OT" in tables.stdout
    # The metric: a column of the printed tables, a child-run metric, compared, in the comparison view.
    header = next(line for line in tables.stdout.splitlines() if line.startswith("| method"))
    assert "sample_spread" in header
    assert "on sample_spread" in compared.stdout and compared.stdout.count("no verdict") == 0
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("extend")
    children = client.search_runs([experiment.experiment_id], filter_string="tags.`fmx.evaluation` != ''")
    assert len(children) == 4
    spreads = {run.data.params["objective"] + run.data.params["seed"]: run.data.metrics["sample_spread"] for run in children}
    for row in runs.itertuples():
        assert spreads[f"{row.objective}{row.seed}"] == pytest.approx(row.sample_spread, rel=1e-3)
    view = json.loads(experiment.tags[VIEW_TAG])
    assert "metrics.`sample_spread`" in view["selectedColumns"]
