"""What a coupling costs fmx's training loop: steps/s of minibatch OT (and Sinkhorn) against independent pairs,
with the pairing computed inline (on the training thread, before each step) and prefetched (the next batch
paired on a worker thread while the current step trains: fm_core.paired_batches), side by side in one run.

Every variant trains through `Trainer.train_until`, the loop both routes run, on the paper's 2-D network
(MLP 5 x 512) on the checkerboard at batch 256, with one PyTorch thread as in a 1-CPU trial. The variants take
turns, `--rounds` times, and each reports the median of its rounds, so a change of the machine's load reaches
all of them alike.

    python benchmarks/bench_coupling.py [--steps 200] [--rounds 5] [--batch 256] [--sinkhorn-reg 0.5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import multiprocessing.synchronize  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from fm_core.couplings import Sinkhorn, make_coupling  # noqa: E402 - after the repository is on sys.path
from fm_core.data import CheckerboardDataset  # noqa: E402
from orchestrator.plan import plan_sweep  # noqa: E402
from orchestrator.training_loop import TrialParts  # noqa: E402
from orchestrator.validation import parse_sweep  # noqa: E402

#: (label, coupling, prefetch): the coupling variants timed against independent pairs.
VARIANTS = [
    ("independent", "independent", False),
    ("minibatch_ot inline", "minibatch_ot", False),
    ("minibatch_ot prefetched", "minibatch_ot", True),
    ("sinkhorn inline", "sinkhorn", False),
    ("sinkhorn prefetched", "sinkhorn", True),
]


def build(coupling: str, prefetch: bool, batch: int, reg: float) -> TrialParts:
    """A training of the path ablation's network with this coupling, as a sweep would build it."""
    config = parse_sweep({
        "name": "bench-coupling",
        "dataset": {"name": "checkerboard"},
        "model": {"kind": "mlp", "hidden": 512, "depth": 5},
        "train": {"steps": 1_000_000, "batch_size": batch, "lr": 1e-3, "sigma_min": 1e-4, "log_every": 1_000_000,
                  "coupling_prefetch": prefetch, "coupling_options": {"sinkhorn": {"reg": reg}} if reg > 0 else {}},
        "eval": {"samples": 100, "likelihood_points": 10, "reference_tol": None, "likelihood": {"solver": "euler", "nfe": 4}},
        "grid": {"path": ["ot"], "objective": ["fm"], "coupling": [coupling], "solver": ["euler"], "nfe": [4]},
    })  # fmt: skip
    key = plan_sweep(config).trainings[0]
    return TrialParts.build(config.for_training(key), key)


class Waits:
    """Seconds the training thread spends getting its paired batches (drawing, and pairing or waiting for the
    worker): what the coupling puts on the critical path, whatever else shares the machine."""

    def __init__(self, parts: TrialParts) -> None:
        self.seconds, self.inner = 0.0, parts.trainer.paired_batch
        parts.trainer.paired_batch = self  # type: ignore[method-assign]  # the trainer calls it per step

    def __call__(self, size: int) -> tuple:
        start = time.perf_counter()
        try:
            return self.inner(size)
        finally:
            self.seconds += time.perf_counter() - start


def steps_per_second(parts: TrialParts, steps: int, waits: Waits) -> tuple[float, float]:
    """Steps/s over `steps` steps, and the milliseconds per step spent getting paired batches."""
    start, first, waited = time.perf_counter(), parts.state.step, waits.seconds
    parts.trainer.train_until(first + steps)
    return steps / (time.perf_counter() - start), (waits.seconds - waited) / steps * 1e3


def pairing_ms(name: str, batch: int, reg: float, repeats: int = 10) -> float:
    """Milliseconds of the pairing alone (cost matrix and solve) on one checkerboard batch."""
    generator = torch.Generator().manual_seed(0)
    x1 = CheckerboardDataset().sample(batch, generator)
    x0 = torch.randn(x1.shape, generator=generator)
    coupling = Sinkhorn(reg=reg) if name == "sinkhorn" else make_coupling(name)
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    coupling.noise_index(x0, x1, u)  # imports, first call
    start = time.perf_counter()
    for _ in range(repeats):
        coupling.noise_index(x0, x1, u)
    return (time.perf_counter() - start) / repeats * 1e3


def _solve_until(stop: threading.Event | multiprocessing.synchronize.Event, cost) -> None:
    while not stop.is_set():
        linear_sum_assignment(cost)


def overlap_probe(parts: TrialParts, steps: int) -> tuple[float, float, float]:
    """Steps/s of the training loop alone, beside a thread and beside a process that solve 256 x 256
    assignments without pause: the thread costs the loop no more than the process does if the solver releases
    the GIL; both cost it much where no core is free."""
    cost = torch.rand(256, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    rates = [steps_per_second(parts, steps, Waits(parts))[0]]
    for stop, worker in ((threading.Event(), threading.Thread), (multiprocessing.Event(), multiprocessing.Process)):
        solver = worker(target=_solve_until, args=(stop, cost))
        solver.start()
        time.sleep(0.2)
        rates.append(steps_per_second(parts, steps, Waits(parts))[0])
        stop.set()
        solver.join()
    return rates[0], rates[1], rates[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=5, help="turns each variant takes")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--sinkhorn-reg", type=float, default=0.5, help="Sinkhorn's reg (0: leave Sinkhorn out)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = [v for v in VARIANTS if args.sinkhorn_reg > 0 or v[1] != "sinkhorn"]
    print(f"cores: {os.cpu_count()}, load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"torch {torch.__version__}, 1 thread; MLP 5 x 512, checkerboard, batch {args.batch}")  # fmt: skip
    for name in dict.fromkeys(v[1] for v in variants if v[1] != "independent"):
        print(f"pairing alone, {name}: {pairing_ms(name, args.batch, args.sinkhorn_reg):.1f} ms per batch")
    runs = {label: build(coupling, prefetch, args.batch, args.sinkhorn_reg) for label, coupling, prefetch in variants}
    waits = {label: Waits(parts) for label, parts in runs.items()}
    rates: dict[str, list[float]] = {label: [] for label in runs}
    waited: dict[str, list[float]] = {label: [] for label in runs}
    try:
        for label, parts in runs.items():
            steps_per_second(parts, 20, waits[label])  # warm-up: first steps, the worker thread started
        for _ in range(args.rounds):
            for label, parts in runs.items():
                rate, wait = steps_per_second(parts, args.steps, waits[label])
                rates[label].append(rate)
                waited[label].append(wait)
    finally:
        for parts in runs.values():
            parts.trainer.close()
    print("overlap probe (independent pairs; steps/s alone, beside an assignment-solving thread, beside such a process):")
    for _ in range(args.rounds):
        alone, thread, process = overlap_probe(runs["independent"], args.steps)
        print(f"  {alone:.1f} alone, {thread:.1f} with the thread, {process:.1f} with the process; "
              f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    base = statistics.median(rates["independent"])
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'variant':<26}{'steps/s (median)':>18}{'min':>9}{'max':>9}{'ratio to independent':>23}{'ms/step getting pairs':>24}")
    for label, values in rates.items():
        median = statistics.median(values)
        wait = f"{statistics.median(waited[label]):.2f}" if label != "independent" else "-"
        print(f"{label:<26}{median:>18.1f}{min(values):>9.1f}{max(values):>9.1f}{median / base:>23.3f}{wait:>24}")


if __name__ == "__main__":
    main()
