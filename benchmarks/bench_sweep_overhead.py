"""How much does fmx's orchestration (Ray, Tune, MLflow, Parquet) cost on top of the trials' own work?

Runs real `fmx sweep`s of many short trials in a scratch folder and prints, from this one run:
  * wall time of the whole command, and from the first trial's start to the end (start-up excluded)
  * the trials' own compute (training + all evaluations, timed inside each trial) / parallel slots
  * the ratios wall / ideal (goal: <= 1.15)
  * the same sweep with every trial forced through a Ray Train TorchTrainer, for its per-trial cost
  * how many trainings a naive Tune grid over every axis would run against the trainings fmx ran

    python benchmarks/bench_sweep_overhead.py [--trials 12] [--steps 1500 6000] [--slots 2]
        [--torch-trainer-trials 4 | --no-torch-trainer]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SWEEP = """\
name: overhead
dataset: {{name: checkerboard}}
model: {{kind: mlp, hidden: 128, depth: 3}}
train: {{steps: {steps}, batch_size: 256, checkpoint_every: {ckpt}, torch_trainer: {torch_trainer}}}
eval: {{samples: 1000, likelihood_points: 200, reference_tol: 1.0e-5}}
grid:
  path: [ot]
  objective: [fm]
  seed: {seeds}
  solver: [euler, midpoint, rk4, dopri5]
  nfe: [8, 16, 32]
  tol: [1.0e-3, 1.0e-5]
"""


@dataclass
class Measured:
    wall: float
    startup: float
    compute: pd.Series
    trial_seconds: pd.Series
    settings: int
    plan_line: str


def run(trials: int, steps: int, torch_trainer: bool) -> Measured:
    fmx = str(Path(sys.executable).with_name("fmx"))
    with tempfile.TemporaryDirectory(prefix="fmxbench") as tmp:
        work = Path(tmp)
        text = SWEEP.format(
            steps=steps, ckpt=max(1, steps // 3), seeds=list(range(trials)), torch_trainer=str(torch_trainer).lower()
        )
        (work / "overhead.yaml").write_text(text)
        env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="fmxray", dir="/tmp")}
        start = time.perf_counter()
        done = subprocess.run([fmx, "sweep", "overhead.yaml"], cwd=work, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"fmx sweep failed:\n{done.stderr[-4000:]}")
        runs = pd.read_parquet(work / "results" / "overhead" / "runs.parquet")
        plan = subprocess.run([fmx, "sweep", "overhead.yaml", "--dry-run"], cwd=work, capture_output=True, text=True)
    starts = [float(m) for m in re.findall(r"^\[t\+([0-9.]+)s\].*▶", done.stderr, flags=re.M)]
    per_trial = runs.groupby("trial_id")
    compute, trial_seconds = per_trial["compute_seconds"].first(), per_trial["trial_seconds"].first()
    return Measured(wall, min(starts) if starts else 0.0, compute, trial_seconds, int(per_trial.size().iloc[0]),
                    plan.stdout.strip().splitlines()[-1])  # fmt: skip


def report(label: str, m: Measured, slots: int) -> None:
    ideal = m.compute.sum() / slots
    print(f"\n{label}: {len(m.compute)} trainings x {m.settings} solver settings, {slots} slots")
    print(f"  trial compute {m.compute.sum():.1f} s in all (mean {m.compute.mean():.1f} s a trial); ideal wall {ideal:.1f} s")
    print(f"  whole command        {m.wall:7.1f} s   ratio {m.wall / ideal:.3f}")
    print(f"  from first trial on  {m.wall - m.startup:7.1f} s   ratio {(m.wall - m.startup) / ideal:.3f}"
          f"   (start-up before it: {m.startup:.1f} s)")  # fmt: skip
    extra = (m.wall - m.startup - ideal) * slots / len(m.compute)
    inside = (m.trial_seconds - m.compute).mean()
    between = ((m.wall - m.startup) * slots - m.trial_seconds.sum()) / len(m.compute)
    print(f"  orchestration cost per trial beyond its compute: {extra:.1f} s"
          f" = {inside:.1f} s inside the trial (an actor's first-trial imports, MLflow, checkpoints, plots)"
          f" + {between:.1f} s of idle slot around it (Tune scheduling, actor start, the last trials' tail)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12, help="training trials (seeds)")
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[1500, 6000],
        help="training steps per trial; one sweep per value (the fixed costs weigh less as trials grow)",
    )  # fmt: skip
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1, help="parallel trial slots (CPUs)")
    parser.add_argument(
        "--torch-trainer-trials", type=int, default=4,
        help="trials in the TorchTrainer comparison (each costs ~45 s more here, so fewer than --trials)",
    )  # fmt: skip
    parser.add_argument("--no-torch-trainer", action="store_true", help="skip the TorchTrainer comparison")
    args = parser.parse_args()
    in_process = run(args.trials, args.steps[0], torch_trainer=False)
    report(f"{args.steps[0]}-step trials trained inside the Tune trial (fmx's default for 1 CPU worker)", in_process, args.slots)
    if not args.no_torch_trainer:
        trainer = run(args.torch_trainer_trials, args.steps[0], torch_trainer=True)
        label = f"{args.torch_trainer_trials} of the same {args.steps[0]}-step trials, each through a Ray Train TorchTrainer (1 worker)"
        report(label, trainer, args.slots)
    for steps in args.steps[1:]:
        report(f"{steps}-step trials trained inside the Tune trial", run(args.trials, steps, torch_trainer=False), args.slots)
    naive = len(in_process.compute) * in_process.settings
    print(f"\ntrainings: fmx ran {len(in_process.compute)}; a naive Tune grid over every axis would run {naive}"
          f" ({in_process.settings}x more)")  # fmt: skip
    print(in_process.plan_line)


if __name__ == "__main__":
    main()
