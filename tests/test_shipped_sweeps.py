"""Every shipped sweep file, shrunk (fewer steps, one seed, tiny nets) but with the same grid, runs end to end.

A change that breaks a sweep file or the ablation it encodes fails here. The sweeps share one real local
Ray (started once for the module: `run_sweep` runs on a Ray its caller started and leaves it running) and
write to a real sqlite MLflow store in the test's own folder.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from orchestrator.validation import load_sweep, parse_sweep
from orchestrator.plan import plan_sweep
from orchestrator.report import build_report
from orchestrator.report_artifacts import load_samples, load_trajectories
from orchestrator.scorecard import CLAIMS
from orchestrator import run_sweep
from tests.cli_helpers import REPO
from tests.sweep_here import module_ray

pytestmark = pytest.mark.slow
ABLATIONS = ["path_ablation", "path_ablation_digits", "solver_ablation", "training_speed", "dequantization", "schedule_ablation",
             "coupling_ablation"]  # coupling_ablation_moons is the same grid on another 2D dataset
# The plots `fmx report` must draw for each sweep: what the ablation is about.
REPORT_PLOTS = {  # every report also has metrics_per_method
    "path_ablation": {"samples_per_method", "density_over_t"},
    "path_ablation_digits": {"samples_per_method"},
    "solver_ablation": {"samples_per_method", "density_over_t", "error_vs_nfe", "quality_vs_nfe", "nfe_vs_tolerance"},
    "training_speed": {"samples_per_method", "density_over_t", "quality_vs_step"},
    "dequantization": {"samples_per_method"},
    "schedule_ablation": {"samples_per_method", "density_over_t"},
    "coupling_ablation": {"samples_per_method", "density_over_t", "error_vs_nfe", "quality_vs_nfe"},
}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module's sweeps (tests/sweep_here.py): `run_sweep` runs on a Ray its caller
    started and leaves it running."""
    with module_ray() as ray:
        yield ray


def shrink(data: dict) -> dict:
    """Same axes, solvers, tolerances, budgets and checkpoints-to-evaluate; a fraction of the compute."""
    small = copy.deepcopy(data)
    steps = 24
    old_steps = small["train"]["steps"]
    small["train"].update(steps=steps, checkpoint_every=8, batch_size=32, warmup_steps=0)
    at = small.get("eval", {}).get("at_steps") or []
    small.setdefault("eval", {})["at_steps"] = sorted({max(1, round(s * steps / old_steps)) for s in at} - {steps})
    points = min(small["eval"].get("likelihood_points", 500), 4)
    small["eval"].update(samples=32, likelihood_points=points)
    if small["eval"].get("reference_tol", 1e-7) is not None:  # null (no reference solve) stays null
        small["eval"]["reference_tol"] = 1e-4
    # The likelihood protocol (not a grid setting), where the file leaves it at its default of dopri5 at 1e-5:
    # dopri5 at 1e-3, which on a barely trained U-Net takes a few dozen NFE instead of hundreds.
    small["eval"].setdefault("likelihood", {"solver": "dopri5", "tol": 1e-3})
    small["grid"]["seed"] = small["grid"].get("seed", [0])[:1]
    small["max_concurrent_trials"] = 1  # see tests/conftest.py: ONE_TRIAL_AT_A_TIME
    if small["model"]["kind"] == "mlp":
        small["model"].update(hidden=32, depth=2)
    else:
        small["model"].update(model_channels=8, num_heads=1)
    return small


@pytest.mark.parametrize("name", ABLATIONS)
def test_reduced_sweep_runs_every_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_ray, name: str):
    monkeypatch.chdir(tmp_path)
    original = load_sweep(REPO / "sweeps" / f"{name}.yaml")
    config = parse_sweep(shrink(yaml.safe_load((REPO / "sweeps" / f"{name}.yaml").read_text())), f"{name}.yaml")
    plan, full_plan = plan_sweep(config), plan_sweep(original)
    assert len(plan.settings) == len(full_plan.settings) and len(plan.eval_steps) == len(full_plan.eval_steps)
    node = local_ray.get_runtime_context().get_node_id()
    outcome = run_sweep(config, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert local_ray.is_initialized() and local_ray.get_runtime_context().get_node_id() == node  # left as it was
    runs = outcome.runs
    draws = len(config.eval.dequant_draws) if config.dataset.name == "digits" else 1
    assert len(runs) == len(plan.trainings) * len(plan.settings) * len(plan.eval_steps) * draws
    assert (runs["status"] == "ok").all(), runs.loc[runs["status"] != "ok", ["trial_id", "error"]]
    assert outcome.failed_trials == 0
    assert set(runs["train_step"]) == set(plan.eval_steps)
    if config.eval.likelihood_points:
        assert runs["nll"].notna().all()
    assert runs["sample_metric"].notna().all()
    if name == "coupling_ablation":  # every coupling trained, and its paths measured under every setting
        assert set(runs["coupling"]) == {"independent", "minibatch_ot", "sinkhorn"} and runs["straightness"].notna().all()
    # ode_error is measured exactly when the file asks for a reference solve.
    assert runs["ode_error"].notna().all() if config.eval.reference_tol is not None else runs["ode_error"].isna().all()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    samples, data = load_samples(uri, runs)
    drawn = next(iter(next(iter(samples.values())).values()))
    assert data is not None and data.shape[1:] == drawn.shape[1:]  # the data's own samples, stored by the trials
    report = build_report(runs, tmp_path / "report", name, samples, load_trajectories(uri, runs), data)
    assert {p.stem for p in report.plots} == REPORT_PLOTS[name] | {"metrics_per_method"}
    assert all(p.stat().st_size > 1000 for p in report.plots)
    text = report.markdown.read_text()
    assert all(f"({p.name})" in text for p in report.plots) and "| method |" in text
    assert ("| ODE error |" in text) == (config.eval.reference_tol is not None)  # the summary's column
    assert "## The papers' claims on this sweep" in text and text.count("| not measured |") + text.count("| holds |") + \
        text.count("| fails |") + text.count("| not settled |") == len(CLAIMS)  # every claim judged, whatever the sweep can say
    if name == "solver_ablation":  # the same rows as a sweep without a reference solve would give them
        blind = build_report(runs.assign(ode_error=float("nan")), tmp_path / "no_reference", name)
        assert {p.stem for p in blind.plots} == {"metrics_per_method", "quality_vs_nfe", "nfe_vs_tolerance"}
        assert "| ODE error |" not in blind.markdown.read_text()
