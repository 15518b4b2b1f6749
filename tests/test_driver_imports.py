"""The sweep driver never imports PyTorch (docs/benchmarks.md): nor, at import time, MLflow or matplotlib."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("modules", "absent"),
    [
        # The driver and what Tune is given never import PyTorch; MLflow and matplotlib load when first used.
        ("orchestrator.cli, orchestrator.pipeline, orchestrator.tune_entry", ("torch", "mlflow", "matplotlib")),
        # `fmx validate`, `--help` and a bad file's one-line refusal pay for none of the heavy imports
        # (orchestrator.api loads the stages that need them when a command runs them).
        ("orchestrator.cli", ("torch", "mlflow", "matplotlib", "pandas", "ray.tune")),
    ],
)
def test_the_driver_imports_what_it_needs_when_it_needs_it(modules: str, absent: tuple[str, ...]):
    code = f"import sys\nimport {modules}\nprint(sorted(m for m in {absent!r} if m in sys.modules))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_what_run_sweep_builds_before_ray_starts_the_trials_needs_no_torch():
    """The driver's path through run_sweep short of ray.init: the plan, Tune's callback and trainable, the
    param space (MLflow is imported there on purpose, in a thread beside Ray's start)."""
    code = (
        "import sys\n"
        "from ray import tune\n"
        "from orchestrator.validation import load_sweep\n"
        "from orchestrator.plan import plan_sweep\n"
        "from orchestrator.cells import training_cell\n"
        "from orchestrator.pass_work import TRAIN, WorkItem\n"
        "from orchestrator.trial_setup import build_pass_setup\n"
        "from orchestrator.tune_callbacks import SweepProgress\n"
        "from orchestrator.tune_pass import _param_space, _trial_resources\n"
        "from orchestrator.tune_entry import training_trial\n"
        "config = load_sweep('sweeps/smoke.yaml')\n"
        "plan = plan_sweep(config)\n"
        "tune.with_resources(training_trial, _trial_resources(config))\n"
        "SweepProgress(len(plan.trainings), config.train.steps)\n"
        "work = [WorkItem(key, training_cell(config, key), TRAIN, 'new') for key in plan.trainings]\n"
        "_param_space(work)\n"
        "build_pass_setup(config, plan, work, tracking_uri='sqlite:///unused.db', experiment_id='0',\n"
        "                 storage_root='/tmp/unused', train_storage='/tmp/unused/train', pass_name='tune')\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))\n"
    )
    assert _printed(code)[-1] == "[]"


def test_tunes_loggers_in_the_driver_leave_out_tensorboard_and_pytorch_with_it():
    """Tune adds its TensorBoard logger to a run's callbacks when tensorboardX is installed (ray[tune] brings
    it), and importing tensorboardX imports PyTorch: seconds of CPU in every sweep's driver for files fmx never
    reads. The loggers fmx hands Tune, completed as Tune completes them, keep the JSON and CSV results only."""
    code = (
        "import sys\n"
        "from ray.tune.utils.callback import _create_default_callbacks\n"
        "from orchestrator.tune_pass import _result_loggers\n"
        "callbacks = _create_default_callbacks(_result_loggers(), air_verbosity=None)\n"
        "print(sorted(type(c).__name__ for c in callbacks if 'Logger' in type(c).__name__))\n"
        "print(sorted(m for m in ('torch', 'tensorboardX') if m in sys.modules))\n"
    )
    loggers, heavy = _printed(code)[-2:]
    assert loggers == "['CSVLoggerCallback', 'JsonLoggerCallback']"
    assert heavy == "[]"


def test_the_summary_table_that_every_sweep_and_fmx_tables_print_leaves_out_matplotlib_and_scipy_stats():
    """The stages `fmx sweep` and `fmx tables` run, and the summary with its t-intervals: the report (which draws
    with matplotlib) is a stage of its own, and the t quantile comes from scipy.special. They were a second of
    CPU in every sweep's driver and every `fmx tables`."""
    code = (
        "import sys\n"
        "import orchestrator.pipeline, orchestrator.publish, orchestrator.results\n"
        "from fm_core.solvers import SolverSetting\n"
        "from orchestrator.rows import EvalRow\n"
        "from orchestrator.tables import rows_frame\n"
        "rows = [EvalRow.of(SolverSetting('euler', nfe_budget=4), 10, trial_id=f'ot-fm-independent-s{s}', path='ot',\n"
        "                   objective='fm', coupling='independent', seed=s, dataset='moons', model='mlp', nfe=4, nll=1.0 + s)\n"
        "        for s in range(3)]\n"
        "table, _ = orchestrator.results.table_view(rows_frame(rows))\n"
        "print(len(table), sorted(m for m in ('matplotlib', 'scipy.stats', 'torch') if m in sys.modules))\n"
    )
    assert _printed(code)[-1] == "1 []"


def _printed(code: str) -> list[str]:
    """The lines `code` prints, run in a fresh interpreter in the checkout (so nothing is imported already)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()
