"""cluster.yaml, checked offline: Ray's own validation, then what fmx needs from the cluster (docs/cluster.md)."""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.cli_helpers import REPO, cleanup_ray_tmp, fmx_env, run_fmx

CLUSTER_FILE = REPO / "cluster.yaml"
SHARED = "/mnt/fmx"  # where setup_commands mount the shared file system (EFS)
COMMAND_LISTS = (
    "initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
    "head_start_ray_commands", "worker_start_ray_commands",
)  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_FILE.read_text())


def _ray_validate(config: dict[str, Any]) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))  # fills Ray's AWS defaults; needs no credentials


def _workers(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cluster["available_node_types"].items() if k != cluster["head_node_type"]}


def _commands(cluster: dict[str, Any], *lists: str) -> list[str]:
    return [cmd for name in lists or COMMAND_LISTS for cmd in cluster.get(name) or []]


def test_ray_accepts_the_cluster_file(cluster: dict[str, Any]):
    _ray_validate(cluster)
    assert cluster["provider"]["type"] == "aws"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        for key in parents:
            config = config[key]
        config[leaf] = value

    return edit


BROKEN = {
    "misspelt_top_level_key": (lambda c: c.update(max_worker=c.pop("max_workers")), "max_worker"),
    "misspelt_node_type_key": (_set("available_node_types.gpu.min_worker", 1), "min_worker"),
    "head_type_not_defined": (_set("head_node_type", "cpu_head"), "head_node_type"),
    "min_workers_above_the_cap": (_set("available_node_types.gpu.min_workers", 99), "max_workers"),
    "gpu_count_not_a_number": (_set("available_node_types.gpu.resources.GPU", "one"), "one"),
}


@pytest.mark.parametrize("edit, message", BROKEN.values(), ids=BROKEN.keys())
def test_ray_rejects_a_broken_variant(cluster: dict[str, Any], edit, message: str):
    import jsonschema

    broken = copy.deepcopy(cluster)
    edit(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=message):
        _ray_validate(broken)


def test_gpu_workers_autoscale_within_sane_bounds(cluster: dict[str, Any]):
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and head.get("max_workers", 0) == 0  # no training on the head
    workers = _workers(cluster)
    gpu_types = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no worker node type offers a GPU"
    for spec in gpu_types.values():
        assert re.fullmatch(r"(g[4-6]|p[3-5])[a-z]*\.\w+", spec["node_config"]["InstanceType"])
        assert spec["resources"]["CPU"] >= 1
    for spec in workers.values():
        assert 0 <= spec["min_workers"] <= spec["max_workers"] <= cluster["max_workers"]
    assert sum(spec["min_workers"] for spec in workers.values()) <= cluster["max_workers"] <= 64
    assert cluster["idle_timeout_minutes"] > 0


def test_every_node_installs_fmx_from_the_repository_with_the_pinned_versions(cluster: dict[str, Any]):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    setup = " ; ".join(_commands(cluster, "setup_commands"))  # setup_commands run on every node
    assert re.search(r"git clone \S+ ~/fmx", setup)
    install = next(cmd for cmd in cluster["setup_commands"] if "pip install" in cmd)
    # constraints.txt pins Ray and torch exactly (tests/test_packaging.py): the same on every node
    assert "-e ~/fmx" in install and "-c ~/fmx/constraints.txt" in install
    python = re.search(r"uv venv --python (3\.\d+)", setup).group(1)  # the AMI's own Python is 3.10
    assert Version(python) in SpecifierSet(pyproject["requires-python"])
    assert "fmx-venv/bin:$PATH" in setup  # ray, fmx and mlflow of the venv in every later command


def _mlflow_command(cluster: dict[str, Any]) -> str:
    return next(cmd for cmd in _commands(cluster, "head_start_ray_commands") if "mlflow server" in cmd)


def test_mlflow_runs_on_the_head_bound_to_its_private_address(cluster: dict[str, Any]):
    command = _mlflow_command(cluster)
    host = re.search(r"--host (\S+)", command).group(1)
    assert host == "$HEAD_IP"
    # The private address of the interface that routes out, never 0.0.0.0 or a public address.
    assert re.search(r"HEAD_IP=\$\(ip -4 route get \S+ \| awk .*\"src\"", command)
    assert f"sqlite:///{SHARED}/" in command and f"--artifacts-destination {SHARED}/" in command
    assert "MLFLOW_TRACKING_URI=http://%s:5000" in command and "--port 5000" in command
    not_head = _commands(cluster, "setup_commands", "worker_setup_commands", "worker_start_ray_commands")
    assert not any("mlflow server" in cmd for cmd in not_head)


def test_nothing_listens_publicly_but_ssh(cluster: dict[str, Any]):
    every = _commands(cluster)
    assert not any(re.search(r"0\.0\.0\.0|::/0|--host[= ](::|\*)", cmd) for cmd in every)
    head_start = next(cmd for cmd in _commands(cluster, "head_start_ray_commands") if "ray start --head" in cmd)
    assert "--dashboard-host=127.0.0.1" in head_start
    # Ray opens SSH to the world and all traffic within the group; extra inbound rules would be ours.
    rules = cluster["provider"].get("security_group", {}).get("IpPermissions", [])
    assert all(rule.get("FromPort") == rule.get("ToPort") == 22 for rule in rules)


def test_every_node_mounts_the_shared_storage(cluster: dict[str, Any]):
    mount = next(cmd for cmd in cluster["setup_commands"] if "mount" in cmd)
    assert re.search(rf"mount -t nfs4 .* \S+:/ {SHARED}\b", mount)
    assert f"mountpoint -q {SHARED}" in mount  # a rerun of `ray up` does not mount twice


@pytest.mark.parametrize("lists", COMMAND_LISTS)
def test_every_command_is_valid_shell(cluster: dict[str, Any], lists: str):
    for cmd in cluster.get(lists) or []:
        checked = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert checked.returncode == 0, f"{lists}: {cmd}\n{checked.stderr}"
        shlex.split(cmd)  # balanced quotes


def _docs_sweep() -> str:
    docs = (REPO / "docs" / "cluster.md").read_text()
    return next(b for b in re.findall(r"```yaml\n(.*?)```", docs, re.S) if "storage_path:" in b)


def test_the_docs_cluster_sweep_validates_without_any_cluster(tmp_path: Path):
    sweep = yaml.safe_load(_docs_sweep())
    assert sweep["storage_path"].startswith(SHARED + "/") and sweep["train"]["use_gpu"] is True
    assert sweep["train"]["max_failures"] >= 1
    (tmp_path / "gpu.yaml").write_text(_docs_sweep())
    env = fmx_env()
    try:
        result = run_fmx(["validate", "gpu.yaml"], tmp_path, env, timeout=120)  # no --address, Ray or MLflow
    finally:
        cleanup_ray_tmp(env)
    assert result.returncode == 0, result.stderr
    assert "gpu.yaml: ok" in result.stdout and "12 trainings" in result.stdout
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()
