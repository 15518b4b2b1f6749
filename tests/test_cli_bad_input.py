"""Bad input through the real CLI: exit code 2, one message naming file/key/value, nothing written."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from tests.cli_helpers import REPO, fmx_env, run_fmx

GOOD = textwrap.dedent(
    """\
    name: bad-input
    dataset: {name: checkerboard}
    model: {kind: mlp, hidden: 16, depth: 2}
    train: {steps: 10, batch_size: 32}
    eval: {samples: 50, likelihood_points: 10}
    grid: {path: [ot], objective: [fm], solver: [euler], nfe: [4]}
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CASES = {
    "malformed_yaml": (GOOD.replace("grid: {", "grid: {{"), [], ["malformed YAML", "line"]),
    "unknown_key": (GOOD + "extra_key: 1\n", [], ["extra_key", "unknown key"]),
    "unknown_nested_key": (GOOD.replace("steps: 10", "stepz: 10"), [], ["train.stepz", "unknown key"]),
    "unknown_path": (GOOD.replace("path: [ot]", "path: [cosine]"), [], ["grid.path", "cosine"]),
    "unknown_solver": (GOOD.replace("solver: [euler]", "solver: [rk45]"), [], ["grid.solver", "rk45"]),
    "impossible_combination": (GOOD.replace("objective: [fm]", "objective: [sm]"), [], ["grid", "'sm'", "'ot'"]),
    "tolerance_for_euler": (GOOD.replace("nfe: [4]", "nfe: [4], tol: [1.0e-5]"), [], ["grid.tol", "euler"]),
    "negative_tolerance": (
        GOOD.replace("solver: [euler], nfe: [4]", "solver: [dopri5], tol: [-1.0e-5]"), [], ["grid.tol", "-1e-05"]
    ),
    "missing_data_folder": (
        GOOD.replace("dataset: {name: checkerboard}", "dataset: {name: image_folder, root: /no/such/folder}").replace(
            "kind: mlp", "kind: unet"
        ),
        [],
        ["dataset.root", "/no/such/folder", "does not exist"],
    ),
    "unreachable_address": (GOOD, ["--address", f"127.0.0.1:{_free_port()}"], ["--address", "cannot reach"]),
    "unreachable_tracking_uri": (
        GOOD, ["--tracking-uri", f"http://127.0.0.1:{_free_port()}"], ["--tracking-uri", "cannot reach"]
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_clear_message_and_writes_nothing(tmp_path: Path, case: str):
    text, extra_args, expected = CASES[case]
    sweep = tmp_path / "sweeps" / "bad.yaml"
    sweep.parent.mkdir()
    sweep.write_text(text)
    result = run_fmx(["sweep", "sweeps/bad.yaml", *extra_args], cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert message.startswith("error:"), message
    assert "Traceback" not in result.stderr
    for fragment in expected:
        assert fragment in message, message
    if "--" not in expected[0]:
        assert "sweeps/bad.yaml" in message  # names the file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweeps"]  # no results/, no mlflow.db


def test_validate_accepts_the_shipped_sweeps(tmp_path: Path):
    env = fmx_env({"CIFAR10_ROOT": str(tmp_path)})  # cifar10.yaml reads its data folder from the environment
    for sweep in sorted((REPO / "sweeps").glob("*.yaml")):
        result = run_fmx(["validate", str(sweep)], cwd=tmp_path, env=env, timeout=120)
        assert result.returncode == 0, f"{sweep.name}: {result.stderr}"
        assert "ok" in result.stdout


def test_dry_run_lists_trainings_and_evaluations_without_running(tmp_path: Path):
    result = run_fmx(["sweep", str(REPO / "sweeps" / "smoke.yaml"), "--dry-run"], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ot-fm-independent-s0" in result.stdout and "vp-sm-independent-s0" in result.stdout
    assert "6 evaluations" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_cifar10_sweep_without_its_data_folder_is_refused(tmp_path: Path):
    env = fmx_env({"CIFAR10_ROOT": str(tmp_path / "absent")})
    result = run_fmx(["validate", str(REPO / "sweeps" / "cifar10.yaml")], cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 2 and "dataset.root" in result.stderr and "absent" in result.stderr
