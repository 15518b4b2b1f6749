"""What measuring straightness and path energy adds to a sample solve: `sample(..., energy=True)` against the
plain solve, on the smoke sweep's network size (MLP 64 x 3 on 2-D data, untrained), interleaved so that a busy
machine slows both alike. The NFE must be the same (the energy adds no evaluation and steers no step).

    python benchmarks/bench_path_energy.py [--samples 1000] [--repeats 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fm_core.sampling import SolverSetting, sample  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(),
                              torch.nn.Linear(64, 2))  # fmt: skip

    def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return 3 * net(torch.cat([x, t.expand(len(x), 1)], 1))

    x0 = torch.randn(args.samples, 2)
    for setting in (SolverSetting.adaptive("dopri5", 1e-5), SolverSetting("euler", nfe_budget=8)):
        seconds: dict[bool, list[float]] = {False: [], True: []}
        nfe: dict[bool, int] = {}
        for _ in range(args.repeats):
            for energy in (False, True):
                start = time.perf_counter()
                nfe[energy] = sample(field, x0, setting, energy=energy).nfe
                seconds[energy].append(time.perf_counter() - start)
        assert nfe[False] == nfe[True], nfe
        for energy, name in ((False, "plain"), (True, "with energy")):
            times = seconds[energy]
            print(f"{setting.label:18s} {name:12s} NFE {nfe[energy]:3d}  fastest {min(times) * 1e3:6.1f} ms"
                  f"  median {statistics.median(times) * 1e3:6.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
