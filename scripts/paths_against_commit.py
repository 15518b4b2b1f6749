"""Check that fm_core/paths.py computes exactly what it did at an earlier commit, in float32, near the ends too.

    python scripts/paths_against_commit.py e847c3a

Loads that commit's fm_core/paths.py (through `git show`) beside the current one and asserts bitwise equality
(NaN where both are NaN) of alpha/sigma, their derivatives, the CFM sample and target, the conditional and
probability-flow fields, and ScoreFlow's times, for every schedule both versions have, on 1001 times in [0, 1]
plus points at 1e-7 from the ends and past t = 1 (where adaptive solvers overshoot).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(commit: str) -> None:
    from fm_core import paths as new

    text = subprocess.run(["git", "show", f"{commit}:fm_core/paths.py"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "paths_then.py"
        file.write_text(text)
        spec = importlib.util.spec_from_file_location("paths_then", file)
        old = importlib.util.module_from_spec(spec)
        sys.modules["paths_then"] = old
        spec.loader.exec_module(old)

    def same(u: torch.Tensor, v: torch.Tensor) -> None:
        torch.testing.assert_close(u, v, rtol=0, atol=0, equal_nan=True)

    ends = [1e-7, 1e-4, 1 - 1e-4, 1 - 1e-5, 1 - 1e-6, 1 - 1e-7, 1.0, 1.01]
    t = torch.cat([torch.linspace(0, 1, 1001), torch.tensor(ends)]).float()
    g = torch.Generator().manual_seed(0)
    x0, x1, score = (torch.randn(len(t), 3, generator=g) for _ in range(3))
    names = [n for n in ("ot", "vp", "ve", "cosine", "poly", "linear_vp") if n in getattr(old, "PATHS", {"ot": 0, "vp": 0, "ve": 0})]
    for name in names:
        for options in ({}, {"sigma_min": 1e-4}) if name == "ot" else ({},):
            a, b = old.make_path(name, **options), new.make_path(name, **options)
            for fn in ("alpha_sigma", "d_alpha_sigma"):
                for u, v in zip(getattr(a, fn)(t), getattr(b, fn)(t), strict=True):
                    same(u, v)
            for u, v in zip(a.sample(x0, x1, t), b.sample(x0, x1, t), strict=True):
                same(u, v)
            same(a.conditional_vector_field(x0, x1, t), b.conditional_vector_field(x0, x1, t))
            same(a.score_to_vector_field(x0, score, t), b.score_to_vector_field(x0, score, t))
            if getattr(b, "likelihood_weighting", False):
                for u, v in zip(a.likelihood_weighted_t(1000, generator=torch.Generator().manual_seed(1)),
                                b.likelihood_weighted_t(1000, generator=torch.Generator().manual_seed(1)), strict=True):  # fmt: skip
                    same(u, v)
            print(f"{name} {options or ''}: bitwise equal to {commit} on {len(t)} float32 times")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "HEAD")
