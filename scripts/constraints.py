"""Write constraints.txt: the exact version of every distribution `pip install -e '.[dev]'` pulls in, read from
the environment this runs in (run it with the venv's Python after a change of versions there):

    .venv/bin/python scripts/constraints.py          # rewrites constraints.txt
    .venv/bin/python scripts/constraints.py --check  # exit 1 if the file is not what this environment holds

Only what '.[dev]' needs is written: never fmx itself, nor what else lies in the venv (ruff, the `bench`
extra). A local build label (torch's `+cpu`) is dropped: `torch==2.13.0` admits the CPU and the CUDA builds.
tests/test_packaging.py reads `requirement_closure` to check the file against the environment.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO / "constraints.txt"
HEADER = """\
# The exact versions fmx's tests pass with: what `pip install -e '.[dev]'` pulls in, pinned. pyproject.toml asks
# only for ranges, so that fmx installs beside a PyTorch you already have; CI (.ci/run) and the README's first
# command install through this file (`pip install -c constraints.txt -e '.[dev]'`) to get the tested set.
# Written by `python scripts/constraints.py` from a venv installed that way (Python 3.11, Linux x86-64); a
# constraint never installs anything by itself, so a name here that a platform does not need is harmless.
"""


def direct_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[Requirement]:
    """fmx's runtime dependencies and its `dev` extra, as pyproject.toml declares them."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def requirement_closure(roots: Iterable[Requirement], environments: list[dict[str, str]] | None = None) -> set[str]:
    """Canonical names of `roots` and everything they require, through the installed distributions' metadata.
    A requirement counts where its marker holds in any of `environments` (None: this interpreter's only);
    one that is not installed here is named but not followed."""
    environments = environments or [{}]
    found: set[str] = set()
    todo = [(req, "") for req in roots]
    walked: set[tuple[str, str]] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({**env, "extra": extra}) for env in environments):
            continue
        name = canonicalize_name(req.name)
        found.add(name)
        for wanted in {"", *req.extras} - {e for n, e in walked if n == name}:
            walked.add((name, wanted))
            try:
                requires = distribution(name).requires or []
            except PackageNotFoundError:
                break
            todo += [(Requirement(r), wanted) for r in requires]
    return found


def pins(names: Iterable[str]) -> list[str]:
    """`Name==version` of each installed distribution among `names`, as pip freeze spells it, sorted."""
    out = []
    for name in names:
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        out.append(f"{dist.metadata['Name']}=={Version(dist.version).public}")
    return sorted(out, key=lambda pin: canonicalize_name(pin.partition("==")[0]))


def render() -> str:
    return HEADER + "".join(f"{line}\n" for line in pins(requirement_closure(direct_requirements())))


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        same = CONSTRAINTS.read_text() == text
        print("constraints.txt matches this environment" if same else "constraints.txt differs from this environment")
        return 0 if same else 1
    CONSTRAINTS.write_text(text)
    print(f"wrote {CONSTRAINTS} ({text.count('==')} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
