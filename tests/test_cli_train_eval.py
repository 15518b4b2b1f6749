"""`fmx train` and `fmx eval`: one configuration in-process, without Ray."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import REPO, run_fmx


def test_train_then_eval_a_checkpoint_under_another_solver(tmp_path: Path):
    trained = run_fmx(["train", str(REPO / "sweeps" / "smoke.yaml"), "--trial", "vp-fm-independent-s0"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    checkpoint = tmp_path / "checkpoints" / "vp-fm-independent-s0"
    assert (checkpoint / "state.pt").is_file()
    evaluated = run_fmx(["eval", str(checkpoint), "--solver", "rk4", "--nfe", "12"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    values = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in evaluated.stdout.splitlines() if ":" in line)}
    assert values["nfe"].strip() == "12" and values["status"].strip() == "ok"
    assert float(values["sample_metric"]) > 0
    wrong = run_fmx(["train", str(REPO / "sweeps" / "smoke.yaml"), "--trial", "ot-sm-independent-s0"], tmp_path)
    assert wrong.returncode == 2 and "ot-fm-independent-s0" in wrong.stderr
