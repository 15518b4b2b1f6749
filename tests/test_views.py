"""The MLflow UI's comparison view derives from the evaluation row: its columns are the children's params and
metrics (method label and setting left of the values), grouped by method x setting, and a real store
keeps it where the UI reads it (an experiment tag)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from fm_core.solvers import SolverSetting
from orchestrator.rows import EvalRow
from orchestrator.views import VIEW_TAG, comparison_view, metric_names, save_comparison_view

SETTINGS = [SolverSetting("euler", nfe_budget=8), SolverSetting("dopri5", tol=1e-5)]


def _rows(paths=("ot", "vp")) -> list[EvalRow]:
    return [
        EvalRow.of(s, 100, trial_id=f"{p}-fm-independent-s0", path=p, objective="fm", coupling="independent", seed=0,
                   nfe=s.nfe_budget or 40, nll=2.0, nll_unit="bits/dim", nll_nfe=60, sample_metric=0.3,
                   sample_metric_name="classifier_fd", ode_error=math.nan, eval_seconds=1.0)  # fmt: skip
        for p in paths for s in SETTINGS
    ]


def test_metrics_in_a_fixed_order_values_first_and_only_those_measured():
    assert metric_names(_rows()) == ["nfe", "bits_per_dim", "classifier_fd", "nll_nfe", "eval_seconds"]


def test_view_groups_by_method_and_setting_and_leads_with_them_and_the_values():
    rows = _rows()
    view = comparison_view(metric_names(rows))
    cols = view["selectedColumns"]
    assert len(cols) == len(set(cols)) == len(rows[0].child_params()) + len(metric_names(rows))
    # What fits the first screen at 1600 px: the method's label, the setting, then NFE, likelihood, sample metric.
    assert cols[:5] == ["params.`method`", "params.`setting`", "metrics.`nfe`", "metrics.`bits_per_dim`",
                        "metrics.`classifier_fd`"]  # fmt: skip
    assert view["groupBy"] == {"aggregateFunction": "average", "groupByKeys": [
        {"mode": "param", "groupByData": "method"}, {"mode": "param", "groupByData": "setting"}]}  # fmt: skip
    assert view["orderByKey"] == "params.`method`" and view["useGroupedValuesInCharts"] is True
    bars = view["compareRunCharts"]
    assert [(b["type"], b["metricKey"]) for b in bars] == [("BAR", m) for m in ("nfe", "bits_per_dim", "classifier_fd")]
    assert {c["metricSectionId"] for c in view["compareRunCharts"]} == {view["compareRunSections"][0]["uuid"]}
    assert view["compareRunSections"][0]["columns"] == 1  # a chart as wide as the tab: its legend names groups whole


def test_the_method_param_is_the_label_the_cli_prints():
    row = _rows(paths=("ot",))[0].replace(coupling="minibatch_ot", train_axes="lr=0.01")
    assert row.child_params()["method"] == "FM-OT +mbOT [lr=0.01]" and next(iter(row.child_params())) == "method"


def test_training_option_axes_and_guidance_scales_are_columns_and_tell_groups_apart():
    rows = [r.replace(train_axes=f"lr={lr}", cfg_scale=w) for r in _rows() for lr in (0.001, 0.01) for w in (1.0, 2.0)]
    # The method's label names the training options (its groups tell them apart), the setting's the guidance.
    assert {r.child_params()["method"] for r in rows} == {f"FM-{p} [lr={lr}]" for p in ("OT", "VP") for lr in (0.001, 0.01)}
    cols = comparison_view(metric_names(rows))["selectedColumns"]
    assert "params.`train_axes`" in cols
    assert "params.`cfg_scale`" in cols and len(cols) == len(set(cols))
    assert {r.child_params()["setting"] for r in rows} == {"euler_nfe8_cfg1", "euler_nfe8_cfg2", "dopri5_tol1e-05_cfg1",
                                                           "dopri5_tol1e-05_cfg2"}  # fmt: skip


def test_saved_in_a_real_store_where_the_ui_reads_it_and_replaced_on_rewrite(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = MlflowClient(tracking_uri=uri).create_experiment("s", artifact_location=str(tmp_path / "artifacts"))
    save_comparison_view(uri, exp, _rows())
    save_comparison_view(uri, exp, _rows(paths=("ot",)))
    tags = MlflowClient(tracking_uri=uri).get_experiment(exp).tags
    saved = json.loads(tags[VIEW_TAG])
    assert [c["metricKey"] for c in saved["compareRunCharts"]] == ["nfe", "bits_per_dim", "classifier_fd"]
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow's model-training kind, not GenAI


def test_the_tag_names_are_written_once():
    """orchestrator.tags holds every MLflow tag name; no other module of fmx defines one."""
    import ast

    from orchestrator import tags
    from tests.cli_helpers import REPO

    names = {name for name in vars(tags) if name.startswith("TAG_")}
    assert {"TAG_SWEEP", "TAG_TRIAL", "TAG_CELL", "TAG_CURRENT", "TAG_PARENT", "TAG_EVALUATION"} <= names
    defined_elsewhere = [
        f"{path.name}:{node.lineno}"
        for path in sorted((REPO / "orchestrator").glob("*.py")) if path.name != "tags.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        and any(isinstance(t, ast.Name) and t.id.startswith("TAG_") for t in getattr(node, "targets", [getattr(node, "target", None)]))
    ]  # fmt: skip
    assert defined_elsewhere == []


def test_the_sweep_description_links_the_latest_report_run_once(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    from orchestrator.report_link import link_report
    from orchestrator.tracking import ensure_experiment, log_report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_experiment(uri, "s", "FM-OT vs FM-VP")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.md").write_text("# Sweep `s`\n")
    runs = [log_report(uri, "s", tmp_path / "report") for _ in range(2)]
    for run in runs:
        link_report(uri, "s", run)
    store = MlflowClient(tracking_uri=uri)
    note = store.get_experiment_by_name("s").tags["mlflow.note.content"]
    report_id = store.get_experiment_by_name("s/report").experiment_id
    assert note.startswith("FM-OT vs FM-VP\n\n") and note.count("/artifacts/report/report.md") == 1
    assert f"(#/experiments/{report_id}/runs/{runs[1]}/artifacts/report/report.md?workflowType=machine_learning)" in note
    assert [a.path for a in store.list_artifacts(runs[1], "report")] == ["report/report.md"]


def test_a_training_run_page_leads_with_its_loss_strip_and_keeps_a_description_written_in_the_ui(tmp_path: Path):
    """The run's description (the top of its Overview) is the loss strip, at addresses relative to the UI's
    root, linking to the full curve; small enough that MLflow shows it whole (100 px with a 13 px margin)."""
    from matplotlib.image import imread
    from mlflow.tracking import MlflowClient

    from orchestrator.plan import TrainingKey
    from orchestrator.run_page import log_loss_curve
    from orchestrator.tags import TAG_NOTE
    from orchestrator.tracking import TrialRun, ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = ensure_experiment(uri, "s")
    key, losses = TrainingKey("ot", "fm", "independent", 0), [(25, 4.0), (50, 3.7), (75, 3.9)]
    run = TrialRun(uri, exp, "s", key, {}, "cell")
    log_loss_curve(run, losses, tmp_path)
    log_loss_curve(TrialRun(uri, exp, "s", key, {}, "cell"), losses, tmp_path)  # a resumed trial: the same note
    store = MlflowClient(tracking_uri=uri)
    strip = f"get-artifact?path=plots%2Floss_strip.png&run_uuid={run.run_id}"
    curve = f"#/experiments/{exp}/runs/{run.run_id}/artifacts/plots/loss_curve.png?workflowType=machine_learning"
    assert store.get_run(run.run_id).data.tags[TAG_NOTE] == f"[![training loss by step]({strip})]({curve})"
    assert {a.path for a in store.list_artifacts(run.run_id, "plots")} == {"plots/loss_curve.png", "plots/loss_strip.png"}
    height, width = imread(store.download_artifacts(run.run_id, "plots/loss_strip.png", str(tmp_path / "got"))).shape[:2]
    assert height <= 100 - 13 and width >= 8 * height
    store.set_tag(run.run_id, TAG_NOTE, "diverged at step 50: lr too high")
    log_loss_curve(TrialRun(uri, exp, "s", key, {}, "cell"), losses, tmp_path)
    assert store.get_run(run.run_id).data.tags[TAG_NOTE] == "diverged at step 50: lr too high"
