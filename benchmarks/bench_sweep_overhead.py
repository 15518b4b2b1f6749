"""How much does fmx's orchestration (Ray, Tune, MLflow, Parquet) cost on top of the trials' own work?

Runs real `fmx sweep`s of many short trials in a scratch folder and prints, from this one run:
  * wall time of the whole command against the ideal: the trials' own compute (training + all evaluations,
    timed inside each trial) divided by the parallel slots; the ratio (goal: <= 1.15)
  * where the difference goes: before the first trial starts, inside the trials beyond their compute (an
    actor's first trial pays the imports), slots idle between trials, and after the last trial ends
  * the same short trials each forced through a Ray Train TorchTrainer, for its per-trial cost
  * how many trainings a naive Tune grid over every axis would run against the trainings fmx ran

    python benchmarks/bench_sweep_overhead.py [--trials 12] [--steps 1500 6000] [--many 24] [--slots 2]
        [--torch-trainer-trials 4 | --no-torch-trainer]
"""

from __future__ import annotations

import argparse
import os
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
    began: float  # epoch seconds, just before the command was started
    ended: float  # epoch seconds, when it had exited
    trials: pd.DataFrame  # per training trial: compute_seconds, trial_seconds, trial_started_at
    settings: int
    plan_line: str

    @property
    def wall(self) -> float:
        return self.ended - self.began


def run(trials: int, steps: int, torch_trainer: bool) -> Measured:
    fmx = str(Path(sys.executable).with_name("fmx"))
    with tempfile.TemporaryDirectory(prefix="fmxbench") as tmp:
        work = Path(tmp)
        text = SWEEP.format(
            steps=steps, ckpt=max(1, steps // 3), seeds=list(range(trials)), torch_trainer=str(torch_trainer).lower()
        )
        (work / "overhead.yaml").write_text(text)
        env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="fmxray", dir="/tmp")}
        began = time.time()
        done = subprocess.run([fmx, "sweep", "overhead.yaml"], cwd=work, env=env, capture_output=True, text=True)
        ended = time.time()
        if done.returncode != 0:
            sys.exit(f"fmx sweep failed:\n{done.stderr[-4000:]}")
        runs = pd.read_parquet(work / "results" / "overhead" / "runs.parquet")
        plan = subprocess.run([fmx, "sweep", "overhead.yaml", "--dry-run"], cwd=work, capture_output=True, text=True)
    per_trial = runs.groupby("trial_id")
    table = per_trial[["compute_seconds", "trial_seconds", "trial_started_at"]].first().sort_values("trial_started_at")
    return Measured(began, ended, table, int(per_trial.size().iloc[0]), plan.stdout.strip().splitlines()[-1])


def report(label: str, m: Measured, slots: int) -> tuple[float, float]:
    t = m.trials
    ideal = t["compute_seconds"].sum() / slots
    first_start = t["trial_started_at"].min()
    last_end = (t["trial_started_at"] + t["trial_seconds"]).max()
    before, after = first_start - m.began, m.ended - last_end
    beyond = t["trial_seconds"] - t["compute_seconds"]
    # With reuse_actors each slot's actor runs its trials one after another: the first `slots` trials to
    # start are the actors' first trials, which pay the per-process imports.
    first, later = beyond.iloc[:slots], beyond.iloc[slots:]
    idle = ((last_end - first_start) * slots - t["trial_seconds"].sum()) / len(t)
    ratio, steady = m.wall / ideal, (last_end - first_start) / ideal
    print(f"\n{label}: {len(t)} trainings x {m.settings} solver settings, {slots} slots")
    print(f"  trial compute {t['compute_seconds'].sum():.1f} s in all (mean {t['compute_seconds'].mean():.1f} s a trial);"
          f" ideal wall {ideal:.1f} s")  # fmt: skip
    print(f"  whole command                    {m.wall:7.1f} s   ratio {ratio:.3f}")
    print(f"  first trial's start to last end  {last_end - first_start:7.1f} s   ratio {steady:.3f}")
    print(f"  where the {m.wall - ideal:.1f} s beyond the ideal go (per trial, and what it adds to the wall over {slots} slots):")
    n = len(t)
    parts = [
        ("before the first trial starts (CLI, Ray and the MLflow store, Tune's actors)", "", before),
        ("inside each actor's first trial, beyond its compute (imports, first MLflow run)",
         f"{first.mean():5.2f} s a trial", first.sum() / slots),
        ("inside every later trial, beyond its compute (MLflow, checkpoints, plots)",
         f"{later.mean():5.2f} s a trial" if len(later) else "", later.sum() / slots),
        ("slots idle between trials (Tune's hand-over, the last trials' tail)", f"{idle:5.2f} s a trial", idle * n / slots),
        ("after the last trial ends (rows from MLflow, Parquet, Ray's stop, exit)", "", after),
    ]  # fmt: skip
    for what, per_trial, adds in parts:
        print(f"    {what:<82}{per_trial:>16}   {adds:6.1f} s")
    return ratio, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12, help="training trials (seeds)")
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[1500, 6000],
        help="training steps per trial; one sweep per value (the fixed costs weigh less as trials grow)",
    )  # fmt: skip
    parser.add_argument("--many", type=int, default=24, help="one more sweep of this many trials at the last --steps (0: none)")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1, help="parallel trial slots (CPUs)")
    parser.add_argument(
        "--torch-trainer-trials", type=int, default=4,
        help="trials in the TorchTrainer comparison (each costs 20-30 s more here, so fewer than --trials; 0: none)",
    )  # fmt: skip
    parser.add_argument("--no-torch-trainer", action="store_true", help="skip the TorchTrainer comparison")
    args = parser.parse_args()
    summary: list[tuple[int, int, float, float, float, float]] = []

    def in_trial(trials: int, steps: int, label: str) -> Measured:
        measured = run(trials, steps, torch_trainer=False)
        ratio, steady = report(label, measured, args.slots)
        compute = measured.trials["compute_seconds"].mean()
        summary.append((trials, steps, compute, measured.wall, ratio, steady))
        return measured

    first = in_trial(args.trials, args.steps[0], f"{args.steps[0]}-step trials trained inside the Tune trial (fmx's default for 1 CPU worker)")
    if args.torch_trainer_trials > 0 and not args.no_torch_trainer:
        trainer = run(args.torch_trainer_trials, args.steps[0], torch_trainer=True)
        report(f"{args.torch_trainer_trials} of those {args.steps[0]}-step trials, each through a Ray Train TorchTrainer (1 worker)",
               trainer, args.slots)  # fmt: skip
    for steps in args.steps[1:]:
        in_trial(args.trials, steps, f"{steps}-step trials trained inside the Tune trial")
    if args.many:
        in_trial(args.many, args.steps[-1], f"{args.many} trials of {args.steps[-1]} steps trained inside the Tune trial")

    print("\ntrials inside the Tune trial, whole command against the ideal (goal <= 1.15):")
    print("  trials   steps   compute/trial   wall      ratio   first start to last end")
    for trials, steps, compute, wall, ratio, steady in summary:
        print(f"  {trials:6d}  {steps:6d}   {compute:8.1f} s   {wall:7.1f} s   {ratio:.3f}   {steady:.3f}")
    naive = len(first.trials) * first.settings
    print(f"\ntrainings: fmx ran {len(first.trials)}; a naive Tune grid over every axis would run {naive}"
          f" ({first.settings}x more)")  # fmt: skip
    print(first.plan_line)


if __name__ == "__main__":
    main()
