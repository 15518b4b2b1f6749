"""benchmarks/gpu_check.py, the one command a bare GPU machine runs, here on the CPU at its smallest (--tiny) where
`ray` and `mlflow` cannot be imported (nor in any process it starts): both summaries, every part, each ok. The
figures are not checked (benchmarks print them, tests never time anything)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from packaging.utils import canonicalize_name

from tests.cli_helpers import REPO
from tests.no_ray_mlflow import blocking_site

pytestmark = pytest.mark.slow

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
TITLES = {"a": "Training throughput", "b": "dopri5 sampling", "c": "Hutchinson bits/dim", "d": "FID",
          "e": "`fmx train` + `fmx eval` without Ray"}  # fmt: skip


def _env(tmp_path: Path) -> dict[str, str]:
    site = blocking_site(tmp_path / "site")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), str(REPO), os.environ.get("PYTHONPATH")]))}


def test_gpu_check_runs_every_part_without_ray_and_mlflow(tmp_path: Path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out-dir", str(out), "--out", "check"], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "check.json").read_text())
    assert summary["mode"] == "tiny" and summary["environment"]["device"] == "cpu"
    assert summary["environment"]["ray_importable"] is False and summary["environment"]["mlflow_importable"] is False
    parts = {p["key"]: p for p in summary["parts"]}
    assert list(parts) == list("abcde")
    for key, part in parts.items():
        assert part["status"] == "ok", (key, part["error"], part.get("traceback"))
        assert part["units"] and part["ray_or_mlflow_loaded"] == [], key
    assert {u["unit"] for u in parts["a"]["units"]} >= {"fp32 eager", "bf16 eager"}
    assert parts["e"]["units"][0]["device"] == "cpu" and parts["e"]["units"][1]["nfe"] > 0
    assert "STAND-IN detector" in parts["d"]["notes"][0]
    text = (out / "check.md").read_text()
    assert "a small U-Net on the CPU" in text
    for key, title in TITLES.items():
        assert f"## ({key}) {title}" in text and f"| ({key}) |" in text
    assert sorted(p.name for p in out.iterdir()) == ["check.json", "check.md", "logs"]


def test_gpu_check_without_a_gpu_and_without_quick_says_so_and_exits_2(tmp_path: Path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out-dir", str(tmp_path / "out")], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 2 and "no CUDA GPU here" in done.stderr and "--quick" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_wheel_list_is_one_list_at_constraints_txt_versions():
    """docs/benchmarks.md's download and install lines and the script's own message name the same pins, and
    those are constraints.txt's (a version bump there cannot leave the bare machine's wheels behind)."""
    pins = {canonicalize_name(n): v for n, v in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (REPO / "constraints.txt").read_text(), re.M)}
    script = re.search(r"WHEELS = \((.*?)\)", SCRIPT.read_text(), re.S).group(1)
    wheels = re.findall(r'"([A-Za-z0-9_.-]+==[^"]+)"', script)
    assert len(wheels) == 6 and all(pins[canonicalize_name(w.split("==")[0])] == w.split("==")[1] for w in wheels)
    docs = (REPO / "docs" / "benchmarks.md").read_text().split("## GPU check", 1)[1]
    for command in ("pip download --only-binary=:all: --python-version 3.12", "pip install --no-index --find-links wheels/"):
        block = docs.split(command, 1)[1].split("```", 1)[0].split("#", 1)[0].replace("\\\n", " ")
        assert sorted(re.findall(r"\S+==\S+", block)) == sorted(wheels), command
