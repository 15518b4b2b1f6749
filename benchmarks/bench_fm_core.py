"""fm_core against the `flow-matching` package and `torchcfm`: training and likelihood throughput.

One run trains the same MLP (same class, same initial weights, same data batches, Adam lr 1e-3,
same number of steps) with

* fm_core        ``make_objective("fm", make_path("ot", sigma_min=0))`` + ``train_step``,
* flow-matching  ``CondOTProbPath().sample`` and the MSE on ``dx_t``,
* torchcfm       ``TargetConditionalFlowMatcher(sigma=0.0).sample_location_and_conditional_flow``,

and computes the same log-likelihoods (exact divergence, same solver and grid) with fm_core's
``log_likelihood`` and flow-matching's ``ODESolver.compute_likelihood``.  Timed repetitions are
interleaved (the order rotates every round) and the median is reported, so background load on a
small machine falls on every library alike.  Warm-up iterations are not timed.

    pip install -e '.[bench]' && pip install --no-deps torchcfm==1.0.7
    python benchmarks/bench_fm_core.py            # full run
    python benchmarks/bench_fm_core.py --quick    # smoke test

The two comparison packages are benchmark-only installs, never runtime dependencies of fmx.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import torch
from torch import Tensor, nn

from fm_core.datasets import make_dataset
from fm_core.likelihood import gaussian_log_prob, log_likelihood
from fm_core.models.mlp import MLP
from fm_core.objectives import make_objective
from fm_core.paths import make_path
from fm_core.sampling import FIXED_STAGES, SolverSetting
from fm_core.training import make_optimizer, train_step

try:
    from flow_matching.path import CondOTProbPath
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper
    from torchcfm.conditional_flow_matching import TargetConditionalFlowMatcher
except ImportError as exc:  # pragma: no cover - depends on the optional extra
    sys.exit(
        f"benchmark dependency missing ({exc.name}): "
        "pip install -e '.[bench]' && pip install --no-deps torchcfm==1.0.7"
    )

LR = 1e-3
#: The versions the figures in docs/benchmarks.md were taken with (flow-matching is the `bench` extra).
PINNED = {"flow-matching": "1.0.10", "torchcfm": "1.0.7"}
FM_CORE, FLOW_MATCHING, TORCHCFM = "fm_core", "flow_matching", "torchcfm"

# A training runner makes one optimizer step on a data batch x1 and returns the loss as a float
# (every loop reads its loss back, as fm_core's train_step does for its NaN check).
StepFn = Callable[[Tensor], float]


# --------------------------------------------------------------------------------------------
# Training: one step function per library, each on its own copy of the same network.
# --------------------------------------------------------------------------------------------


def fm_core_trainer(model: nn.Module, seed: int) -> StepFn:
    objective = make_objective("fm", make_path("ot", sigma_min=0.0))
    optimizer, _ = make_optimizer(model, LR)
    generator = torch.Generator().manual_seed(seed)
    return lambda x1: train_step(model, objective, optimizer, x1, generator=generator).loss


def adam_step(optimizer: torch.optim.Optimizer, loss: Tensor) -> float:
    """The optimizer update a user of flow-matching or torchcfm writes around their loss."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def flow_matching_trainer(model: nn.Module, seed: int) -> StepFn:
    path = CondOTProbPath()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    torch.manual_seed(seed)

    def step(x1: Tensor) -> float:
        x0 = torch.randn_like(x1)
        t = torch.rand(x1.shape[0], dtype=x1.dtype)
        sample = path.sample(x_0=x0, x_1=x1, t=t)
        return adam_step(optimizer, (model(sample.x_t, sample.t) - sample.dx_t).pow(2).mean())

    return step


def torchcfm_trainer(model: nn.Module, seed: int) -> StepFn:
    matcher = TargetConditionalFlowMatcher(sigma=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    torch.manual_seed(seed)

    def step(x1: Tensor) -> float:
        # The target (Lipman et al.) matcher ignores x0 and draws its own noise like it, so x1
        # stands in for x0 rather than charging torchcfm for a normal draw it would throw away.
        t, x_t, u_t = matcher.sample_location_and_conditional_flow(x1, x1)
        return adam_step(optimizer, (model(x_t, t) - u_t).pow(2).mean())

    return step


TRAINERS: dict[str, Callable[[nn.Module, int], StepFn]] = {
    FM_CORE: fm_core_trainer,
    FLOW_MATCHING: flow_matching_trainer,
    TORCHCFM: torchcfm_trainer,
}


def fresh_model(state: dict[str, Tensor], hidden: int, depth: int) -> MLP:
    model = MLP(dim=2, hidden=hidden, depth=depth)
    model.load_state_dict(state)
    return model.train()


def check_targets_agree(batch: Tensor) -> dict[str, float]:
    """Max |difference| of (x_t, target) between fm_core and each library on shared (x0, x1, t)."""
    gen = torch.Generator().manual_seed(7)
    x0 = torch.randn(batch.shape, generator=gen)
    t = torch.rand(batch.shape[0], generator=gen)
    path = make_path("ot", sigma_min=0.0)
    fm = CondOTProbPath().sample(x_0=x0, x_1=batch, t=t)
    # torchcfm's target matcher draws its own noise and returns it; fm_core is evaluated on that noise.
    _, cfm_xt, cfm_ut, eps = TargetConditionalFlowMatcher(sigma=0.0).sample_location_and_conditional_flow(
        batch, batch, t=t, return_noise=True
    )
    diffs = {}
    for lib, noise, theirs in ((FLOW_MATCHING, x0, (fm.x_t, fm.dx_t)), (TORCHCFM, eps, (cfm_xt, cfm_ut))):
        ours = path.sample(noise, batch, t)
        diffs[lib] = max(float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True))
    return diffs


# --------------------------------------------------------------------------------------------
# Likelihood: fm_core.log_likelihood against flow_matching's ODESolver.compute_likelihood.
# --------------------------------------------------------------------------------------------


class Counted(nn.Module):
    """Counts network evaluations so both likelihood solves can be shown to do the same work."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return self.model(x, t)


@dataclass(frozen=True)
class LikelihoodSetting:
    label: str
    method: str
    steps: int | None = None  # fixed grid
    tol: float | None = None  # adaptive

    def fm_core_spec(self) -> SolverSetting:
        if self.steps is not None:
            return SolverSetting(self.method, nfe_budget=self.steps * FIXED_STAGES[self.method])
        return SolverSetting.adaptive(self.method, self.tol)


def fm_core_likelihood(model: Counted, x1: Tensor, setting: LikelihoodSetting) -> Tensor:
    field = make_objective("fm", make_path("ot", sigma_min=0.0)).vector_field(model)
    return log_likelihood(field, x1, setting.fm_core_spec(), t1=1.0, prior_std=1.0, divergence="exact").log_prob


def flow_matching_likelihood(model: Counted, x1: Tensor, setting: LikelihoodSetting) -> Tensor:
    solver = ODESolver(velocity_model=ModelWrapper(model))
    # The same uniform grid from t = 1 (data) to t = 0 (noise) as fm_core's fixed-step solve:
    # with step_size=None a fixed-step method steps exactly on time_grid.
    if setting.steps is not None:
        grid, tol = torch.linspace(1.0, 0.0, setting.steps + 1), {}
    else:
        grid, tol = torch.tensor([1.0, 0.0]), {"atol": setting.tol, "rtol": setting.tol}
    _, log_p = solver.compute_likelihood(
        x_1=x1,
        log_p0=gaussian_log_prob,
        step_size=None,
        method=setting.method,
        time_grid=grid,
        exact_divergence=True,
        **tol,
    )
    return log_p


LIKELIHOODS: dict[str, Callable[[Counted, Tensor, LikelihoodSetting], Tensor]] = {
    FM_CORE: fm_core_likelihood,
    FLOW_MATCHING: flow_matching_likelihood,
}


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    operation: str
    unit: str
    other: str
    ours: float
    theirs: float
    ratio: float


def rates_and_ratio(seconds: dict[str, list[float]], other: str, work: float) -> tuple[float, float, float]:
    """Median rates of fm_core and `other`, and the median over rounds of their per-round ratio.

    The two runs of one round are adjacent in time and so see nearly the same background load;
    the per-round ratio cancels that load, which a ratio of the two medians would not.
    """
    ours, theirs = seconds[FM_CORE], seconds[other]
    paired = statistics.median(t / o for o, t in zip(ours, theirs, strict=True))
    return work / statistics.median(ours), work / statistics.median(theirs), paired


def rotated(names: list[str], r: int) -> list[str]:
    """Round r starts with a different library, so none always runs first or last."""
    k = r % len(names)
    return names[k:] + names[:k]


def interleaved(libs: list[str], rounds: int, run: Callable[[str, int], None]) -> dict[str, list[float]]:
    """Seconds of run(lib, round) for every round and library; the order rotates every round."""
    seconds: dict[str, list[float]] = {lib: [] for lib in libs}
    for r in range(rounds):
        for lib in rotated(libs, r):
            start = time.perf_counter()
            run(lib, r)
            seconds[lib].append(time.perf_counter() - start)
    return seconds


def spread(seconds: list[float], work: float) -> str:
    return f"median {work / statistics.median(seconds):,.1f}/s (best {work / min(seconds):,.1f}/s)"


def bench_training(args: argparse.Namespace, state: dict[str, Tensor], batch_size: int, steps: int) -> list[Row]:
    """Each library trains its own copy for args.rounds rounds of `steps` steps on the same batches."""
    gen = torch.Generator().manual_seed(100 + batch_size)
    data = make_dataset("checkerboard")
    warm = [data.sample(batch_size, gen) for _ in range(args.warmup)]
    batches = [[data.sample(batch_size, gen) for _ in range(steps)] for _ in range(args.rounds)]
    libs = list(TRAINERS)
    step_fns = {lib: TRAINERS[lib](fresh_model(state, args.hidden, args.depth), 1) for lib in libs}
    losses: dict[str, float] = {}
    for lib in libs:
        for x1 in warm:
            step_fns[lib](x1)

    def run(lib: str, r: int) -> None:
        for x1 in batches[r]:
            losses[lib] = step_fns[lib](x1)

    seconds = interleaved(libs, args.rounds, run)
    print(f"  train batch {batch_size}, {args.rounds} rounds x {steps} steps, steps/s: "
          + "; ".join(f"{lib} {spread(seconds[lib], steps)}, last loss {losses[lib]:.3f}" for lib in libs))
    return [
        Row(f"train, batch {batch_size}", unit, other, *rates_and_ratio(seconds, other, work))
        for other in (FLOW_MATCHING, TORCHCFM)
        for unit, work in (("steps/s", steps), ("points/s", steps * batch_size))
    ]


def bench_likelihood(args: argparse.Namespace, model: nn.Module, setting: LikelihoodSetting) -> list[Row]:
    x1 = make_dataset("checkerboard").sample(args.points, torch.Generator().manual_seed(5))
    libs = list(LIKELIHOODS)
    for lib in libs:  # warm-up, untimed
        LIKELIHOODS[lib](Counted(model), x1[: min(64, args.points)], setting)
    log_p: dict[str, Tensor] = {}
    calls: dict[str, int] = {}

    def run(lib: str, r: int) -> None:
        counted = Counted(model)
        log_p[lib] = LIKELIHOODS[lib](counted, x1, setting).detach()
        calls[lib] = counted.calls

    seconds = interleaved(libs, args.lik_rounds, run)
    diff = float((log_p[FM_CORE] - log_p[FLOW_MATCHING]).abs().max())
    print(f"  log-likelihood {setting.label}, {args.lik_rounds} rounds x {args.points} points, points/s: "
          + "; ".join(f"{lib} {spread(seconds[lib], args.points)}, {calls[lib]} net evals" for lib in libs)
          + f"; mean log p {float(log_p[FM_CORE].mean()):.4f}, max |log p fm_core - flow_matching| {diff:.2e}")
    return [Row(f"log-likelihood {setting.label}", "points/s", FLOW_MATCHING,
                *rates_and_ratio(seconds, FLOW_MATCHING, args.points))]


def pretrain(state: dict[str, Tensor], args: argparse.Namespace) -> MLP:
    """A briefly trained network, so the likelihood cross-check runs on a non-trivial field."""
    model = fresh_model(state, args.hidden, args.depth)
    step = fm_core_trainer(model, seed=3)
    gen = torch.Generator().manual_seed(4)
    data = make_dataset("checkerboard")
    for _ in range(args.pretrain_steps):
        step(data.sample(256, gen))
    return model.eval()


def print_table(rows: list[Row]) -> None:
    header = ("operation", "unit", "other", "fm_core", "other rate", "ratio fm_core/other")
    lines = [header] + [
        (r.operation, r.unit, r.other, f"{r.ours:,.1f}", f"{r.theirs:,.1f}", f"{r.ratio:.2f}") for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) if j < 3 else cell.rjust(w)
                                for j, (cell, w) in enumerate(zip(line, widths, strict=True))) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 1) + (":" if j >= 3 else "-") for j, w in enumerate(widths)) + "|")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="timed training steps per round and batch size "
                   "(default: 4096 / batch, the same number of points at every batch size)")
    p.add_argument("--warmup", type=int, default=3, help="untimed training steps per library before the rounds")
    p.add_argument("--rounds", type=int, default=40, help="interleaved training rounds; the median is reported")
    p.add_argument("--batch", type=int, nargs="+", default=[4096, 256], help="training batch sizes")
    p.add_argument("--points", type=int, default=1000, help="points per likelihood solve")
    p.add_argument("--lik-rounds", type=int, default=7, help="interleaved likelihood solves per library")
    p.add_argument("--lik-steps", type=int, default=10, help="steps of the fixed-grid (midpoint) likelihood solve")
    p.add_argument("--tol", type=float, default=1e-5, help="atol = rtol of the dopri5 likelihood solve (0: skip)")
    p.add_argument("--pretrain-steps", type=int, default=300, help="fm_core steps before the likelihood runs")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1: steadiest timings on a "
                   "shared machine, where a multi-threaded op stalls whenever another process holds a core)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (seconds, numbers meaningless)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.lik_rounds, args.warmup, args.points, args.pretrain_steps = 3, 2, 2, 1, 200, 20
        args.batch = [256, 32]
        args.lik_steps = 4
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in MLP(dim=2, hidden=args.hidden, depth=args.depth).state_dict().items()}
    base_steps = args.steps
    print(f"python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()} "
          f"(cpu_count {os.cpu_count()}), " + ", ".join(f"{p} {version(p)}" for p in PINNED))
    for package, pinned in PINNED.items():
        if version(package) != pinned:
            print(f"note: {package} {version(package)} installed, the documented figures used {pinned}")
    print(f"MLP(2, hidden={args.hidden}, depth={args.depth}), Adam lr {LR}, checkerboard data, "
          f"{args.rounds} interleaved rounds, {args.warmup} warm-up steps excluded")
    diffs = check_targets_agree(make_dataset("checkerboard").sample(1024, torch.Generator().manual_seed(9)))
    print("  (x_t, target) on one shared batch, max |fm_core - other|: "
          + ", ".join(f"{lib} {d:.1e}" for lib, d in diffs.items())
          + " (torchcfm divides by 1 - t, which loses digits as t -> 1)")

    rows: list[Row] = []
    for batch in args.batch:
        # By default a round at every batch size trains on the same number of points (4096).
        steps = base_steps if base_steps is not None else max(1, 4096 // batch)
        rows += bench_training(args, state, batch, steps)

    model = pretrain(state, args)
    settings = [LikelihoodSetting(f"midpoint {args.lik_steps} steps", "midpoint", steps=args.lik_steps)]
    if args.tol > 0:
        settings.append(LikelihoodSetting(f"dopri5 tol {args.tol:g}", "dopri5", tol=args.tol))
    for setting in settings:
        rows += bench_likelihood(args, model, setting)

    print("\nrates: median over rounds; ratio: median over rounds of the per-round ratio fm_core/other")
    print_table(rows)
    worst = min(rows, key=lambda r: r.ratio)
    print(f"\nlowest ratio fm_core/other: {worst.ratio:.2f} ({worst.operation}, {worst.unit}, vs {worst.other})")


if __name__ == "__main__":
    main()
