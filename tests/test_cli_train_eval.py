"""`fmx train` and `fmx eval`: one configuration in-process, without Ray. The training and the evaluation that
succeeds run as the console script does, in processes of their own; the refusals run in the test's process
(`fmx_here`, tests/cli_helpers.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from orchestrator.validation import load_sweep
from orchestrator.errors import CheckpointError
from orchestrator.plan import plan_sweep
from orchestrator.training_loop import TrialParts
from tests.cli_helpers import REPO, run_fmx
from tests.cli_helpers import fmx_in_this_process as fmx_here


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `fmx train` of the smoke sweep's vp-fm trial, shared by the tests (each edits its own copy)."""
    folder = tmp_path_factory.mktemp("train")
    done = run_fmx(["train", str(REPO / "sweeps" / "smoke.yaml"), "--trial", "vp-fm-independent-s0"], folder)
    assert done.returncode == 0, done.stderr
    checkpoint = folder / "checkpoints" / "vp-fm-independent-s0"
    assert (checkpoint / "state.pt").is_file() and (checkpoint / "record.json").is_file()
    return checkpoint


def _own_copy(trained: Path, tmp_path: Path) -> Path:
    checkpoint = tmp_path / "checkpoints" / trained.name
    shutil.copytree(trained, checkpoint)
    return checkpoint


def test_train_then_eval_a_checkpoint_under_another_solver(trained: Path, tmp_path: Path):
    checkpoint = _own_copy(trained, tmp_path)
    evaluated = run_fmx(["eval", str(checkpoint), "--solver", "rk4", "--nfe", "12"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    values = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in evaluated.stdout.splitlines() if ":" in line)}
    assert values["nfe"].strip() == "12" and values["status"].strip() == "ok"
    assert float(values["sample_metric"]) > 0
    wrong = fmx_here(["train", str(REPO / "sweeps" / "smoke.yaml"), "--trial", "ot-sm-independent-s0"], tmp_path)
    assert wrong.returncode == 2 and "ot-fm-independent-s0" in wrong.stderr


class _Payload:
    """A pickle that, when loaded without weights_only, runs a command (it creates a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_eval_refuses_checkpoints_that_are_not_fmx_data(trained: Path, tmp_path: Path):
    """No code runs from a checkpoint: a state.pt with a pickle payload is refused, and so are folders whose
    trial.txt names another trial or none of the sweep's."""
    checkpoint = _own_copy(trained, tmp_path)
    assert (checkpoint / "record.json").is_file()
    args = ["eval", str(checkpoint), "--solver", "euler", "--nfe", "4"]

    (checkpoint / "trial.txt").write_text("ot-fm-independent-s0\n")  # a real trial, but not this checkpoint's
    other = fmx_here(args, tmp_path)
    assert other.returncode == 2 and "is of trial 'vp-fm-independent-s0'" in other.stderr, other.stderr
    (checkpoint / "trial.txt").write_text("nosuch-trial\n")
    unknown = fmx_here(args, tmp_path)
    assert unknown.returncode == 2 and "'nosuch-trial' is not a training" in unknown.stderr, unknown.stderr
    assert "Traceback" not in other.stderr + unknown.stderr

    (checkpoint / "trial.txt").write_text("vp-fm-independent-s0\n")
    marker = tmp_path / "payload-ran"
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    state["optimizer"] = _Payload(marker)
    torch.save(state, checkpoint / "state.pt")
    evil = fmx_here(args, tmp_path)
    assert evil.returncode == 2, evil.stderr
    assert "refused to load" in evil.stderr and "posix.system" in evil.stderr and "Traceback" not in evil.stderr
    assert not marker.exists()
    # The same loader restores Ray Tune trials from shared storage.
    config = load_sweep(checkpoint / "sweep.yaml")
    key = next(k for k in plan_sweep(config).trainings if k.trial_id == "vp-fm-independent-s0")
    with pytest.raises(CheckpointError, match="refused to load"):
        TrialParts.build(config.for_training(key), key).state.restore(checkpoint)
    assert not marker.exists()


def test_eval_of_a_checkpoint_that_does_not_fit_its_sweep_file_is_one_line_and_exit_2(trained: Path, tmp_path: Path):
    """Every way a checkpoint can disagree with the model its sweep.yaml builds (other layer sizes, a missing
    or mistyped entry) ends in one line naming the folder, exit 2, no traceback."""
    checkpoint = _own_copy(trained, tmp_path)
    args = ["eval", str(checkpoint), "--solver", "euler", "--nfe", "4"]
    original_yaml, original_state = (checkpoint / "sweep.yaml").read_text(), (checkpoint / "state.pt").read_bytes()
    config = load_sweep(checkpoint / "sweep.yaml")
    hidden = config.model.hidden
    (checkpoint / "sweep.yaml").write_text(original_yaml.replace(f"hidden: {hidden}", f"hidden: {hidden * 2}"))
    assert (checkpoint / "sweep.yaml").read_text() != original_yaml

    def broken(edit) -> None:
        state = torch.load(checkpoint / "state.pt", weights_only=True)
        edit(state)
        torch.save(state, checkpoint / "state.pt")

    results = {"wider model": fmx_here(args, tmp_path)}
    (checkpoint / "sweep.yaml").write_text(original_yaml)
    for name, edit in {
        "no scheduler": lambda s: s.pop("scheduler"),
        "step not a number": lambda s: s.update(step="many"),
        "model entry renamed": lambda s: s.update(model={f"x.{k}": v for k, v in s["model"].items()}),
    }.items():
        (checkpoint / "state.pt").write_bytes(original_state)
        broken(edit)
        results[name] = fmx_here(args, tmp_path)
    for name, r in results.items():
        assert r.returncode == 2, (name, r.stderr)
        assert "does not fit" in r.stderr and str(checkpoint) in r.stderr, (name, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, (name, r.stderr)
