"""How fmx installs: the Pythons and version ranges pyproject.toml admits, the exact set constraints.txt pins
(what CI and the README's first command install), and a machine without Ray or MLflow (a bare GPU box) that
can still import the science and run `fmx train` / `fmx eval`. Fast: no Ray is started."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.cli_helpers import REPO
from tests.no_ray_mlflow import BLOCKED

SUPPORTED = ("3.11", "3.12", "3.13")
#: Linux on each supported Python, for requirement markers (`python_version < "3.12"` and the like).
ENVIRONMENTS = [{"python_version": v, "python_full_version": f"{v}.0", "sys_platform": "linux",
                 "platform_system": "Linux", "os_name": "posix"} for v in SUPPORTED]  # fmt: skip


def _script() -> ModuleType:
    """scripts/constraints.py, which writes constraints.txt (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("fmx_constraints_script", REPO / "scripts" / "constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier  # exactly one operator, and it is `==`, on a plain version
            assert spec.operator == "==" and not req.extras and req.marker is None, line
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_the_package_admits_python_3_11_to_3_13_and_says_so():
    project = _project()
    python = SpecifierSet(project["requires-python"])
    for minor in SUPPORTED:
        assert python.contains(f"{minor}.0") and python.contains(f"{minor}.9"), minor
    assert not python.contains("3.10.14")  # never tested there (tests/ read pyproject.toml with 3.11's tomllib)
    for minor in SUPPORTED:
        assert f"Programming Language :: Python :: {minor}" in project["classifiers"]


def test_dependencies_are_ranges_and_torch_admits_the_pinned_and_older_releases():
    """Exact versions live in constraints.txt only: a `==` here would make pip replace a user's own torch."""
    requirements = SCRIPT.direct_requirements()
    exact = [str(r) for r in requirements if any(s.operator in ("==", "===") for s in r.specifier)]
    assert exact == []
    (torch,) = [r for r in requirements if r.name == "torch"]
    assert torch.specifier.contains("2.13.0") and torch.specifier.contains("2.4.0")
    assert not torch.specifier.contains("2.3.1")  # torch.amp.GradScaler(device), torch.compile on 3.12


def test_ci_and_the_readmes_first_command_install_through_constraints_txt():
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if "pip install" in line and "-e" in line]
    assert len(ci) == 1 and "-c constraints.txt -e '.[dev]'" in ci[0], ci
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip()
    assert first_block == ("python3 -m venv .venv && . .venv/bin/activate && "
                           "pip install -c constraints.txt -e '.[dev]' && fmx sweep sweeps/smoke.yaml")  # fmt: skip


def test_constraints_pin_torch_2_13_0_and_every_direct_dependency_inside_its_range():
    pins = _pins()
    assert pins["torch"] == Version("2.13.0")  # the release the tests were run with (a local CPU build here)
    for req in SCRIPT.direct_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt does not pin {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"
    assert "fmx" not in pins


def test_constraints_pin_exactly_what_dev_pulls_in():
    """Against this environment's metadata, where it was installed through constraints.txt (CI, the README's
    venv): nothing '.[dev]' needs here is left unpinned, and nothing is pinned that '.[dev]' needs on none of
    the supported Pythons (the file is not a `pip freeze` of a venv that holds more)."""
    pins = _pins()
    for name, pinned in pins.items():
        try:
            installed = Version(version(name))
        except PackageNotFoundError:
            continue  # not needed on this Python or platform (the closure checks below still count it)
        if installed.public != str(pinned):
            pytest.skip(f"this environment was not installed through constraints.txt ({name} {installed} != {pinned})")
    roots = SCRIPT.direct_requirements()
    # A CUDA build of torch 2.13.0 (PyPI's, on Linux) also brings its CUDA libraries and triton, which torch pins
    # itself; the tested set is the CPU build's, which needs none of them: they are not pinned here.
    cuda_build = [r for r in map(Requirement, distribution("torch").requires or []) if "platform_system" in str(r.marker)]
    here = SCRIPT.requirement_closure(roots) - SCRIPT.requirement_closure(cuda_build)
    anywhere = SCRIPT.requirement_closure(roots, ENVIRONMENTS)
    assert sorted(here - set(pins)) == []
    assert sorted(set(pins) - anywhere) == []


def test_the_closure_follows_extras_and_markers():
    """The check above could not fail if the closure named everything installed, or only the roots."""
    closure = SCRIPT.requirement_closure([Requirement("pytest-xdist>=3.5")])
    assert {"pytest-xdist", "pytest", "execnet", "pluggy", "iniconfig"} <= closure
    assert "torch" not in closure and "ray" not in closure
    assert "psutil" not in closure  # only pytest-xdist[psutil] asks for it
    assert "psutil" in SCRIPT.requirement_closure([Requirement("pytest-xdist[psutil]>=3.5")])
    assert SCRIPT.requirement_closure([Requirement('pytest; python_version < "3.0"')]) == set()


def _run_blocked(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKED + textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip


def test_the_blocker_blocks():
    """A check that could not fail otherwise: in the blocked interpreter, `import ray` fails."""
    done = _run_blocked("import ray", REPO)
    assert done.returncode == 1 and "blocked by tests/no_ray_mlflow.py" in done.stderr


def test_without_ray_and_mlflow_fm_core_and_the_training_loop_import_and_fmx_trains_and_evaluates(tmp_path: Path):
    """A bare GPU box: every fm_core module, the training loop, and `fmx train` then `fmx eval` on the checkpoint."""
    sweep = {
        "name": "bare",
        "dataset": {"name": "moons"},
        "model": {"kind": "mlp", "hidden": 16, "depth": 2},
        "train": {"steps": 4, "batch_size": 16, "log_every": 2, "checkpoint_every": 4},
        "eval": {"samples": 16, "likelihood_points": 4, "reference_tol": None},
        "grid": {"path": ["ot"], "objective": ["fm"], "solver": ["euler"], "nfe": [4]},
    }
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(sweep))
    done = _run_blocked(
        """
        import importlib, pkgutil, sys
        import fm_core
        found = [m.name for m in pkgutil.walk_packages(fm_core.__path__, "fm_core.")]
        for name in found:
            importlib.import_module(name)
        import orchestrator.training_loop, orchestrator.local_run
        from orchestrator.cli import app
        app(["train", "bare.yaml", "--out", "ckpt"], standalone_mode=False)
        app(["eval", "ckpt/ot-fm-independent-s0", "--solver", "euler", "--nfe", "4"], standalone_mode=False)
        print("fm_core modules:", len(found))
        print("loaded:", sorted({m.split(".")[0] for m in sys.modules} & {"ray", "mlflow", "torch"}))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "saved ckpt/ot-fm-independent-s0 (4 steps" in done.stdout
    assert "nfe: 4" in done.stdout
    count = int(done.stdout.split("fm_core modules:")[1].split()[0])
    assert count >= 20  # fm_core/*.py and fm_core/models/*
    assert "loaded: ['torch']" in done.stdout
