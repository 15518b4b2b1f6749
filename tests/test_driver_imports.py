"""The sweep driver never imports PyTorch (docs/benchmarks.md): nor, at import time, MLflow or matplotlib."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_driver_and_the_trial_entry_import_neither_torch_nor_mlflow():
    code = (
        "import sys\n"
        "import orchestrator.cli, orchestrator.sweep, orchestrator.tune_entry\n"
        "print(sorted(m for m in ('torch', 'mlflow', 'matplotlib') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_what_run_sweep_builds_before_ray_starts_the_trials_needs_no_torch():
    """The driver's path through run_sweep short of ray.init: the plan, Tune's callback and trainable, the
    param space (MLflow is imported there on purpose, in a thread beside Ray's start)."""
    code = (
        "import sys\n"
        "from ray import tune\n"
        "from orchestrator.config import load_sweep\n"
        "from orchestrator.plan import plan_sweep\n"
        "from orchestrator.progress import SweepProgress\n"
        "from orchestrator.sweep import _every_training, _param_space, _trial_resources, _trial_setup\n"
        "from orchestrator.tune_entry import training_trial\n"
        "config = load_sweep('sweeps/smoke.yaml')\n"
        "plan = plan_sweep(config)\n"
        "tune.with_resources(training_trial, _trial_resources(config))\n"
        "SweepProgress(len(plan.trainings), config.train.steps)\n"
        "work = _every_training(config, plan)\n"
        "_param_space(work)\n"
        "_trial_setup(config, plan, 'sqlite:///unused.db', '0', '/tmp/unused', work, 'tune')\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
