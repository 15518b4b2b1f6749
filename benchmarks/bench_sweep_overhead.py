"""How much does fmx's orchestration (Ray, Tune, MLflow, Parquet) cost on top of the trials' own work?

Runs one real `fmx sweep` of many short trials in a scratch folder and prints, from that one run:
  * wall time of the whole command and of the sweep phase (first trial start to tables written)
  * the trials' own compute (training + all evaluations, measured inside each trial) / parallel slots
  * the ratios wall / ideal (goal: <= 1.15)
  * how many trainings a naive Tune grid over every axis would run against the trainings fmx ran

    python benchmarks/bench_sweep_overhead.py [--trials 12] [--steps 1500] [--slots 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

SWEEP = """\
name: overhead
dataset: {{name: checkerboard}}
model: {{kind: mlp, hidden: 128, depth: 3}}
train: {{steps: {steps}, batch_size: 256, checkpoint_every: {ckpt}}}
eval: {{samples: 1000, likelihood_points: 200, reference_tol: 1.0e-5}}
grid:
  path: [ot]
  objective: [fm]
  seed: {seeds}
  solver: [euler, midpoint, rk4, dopri5]
  nfe: [8, 16, 32]
  tol: [1.0e-3, 1.0e-5]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12, help="training trials (seeds)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per trial")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1, help="parallel trial slots (CPUs)")
    args = parser.parse_args()
    fmx = str(Path(sys.executable).with_name("fmx"))
    with tempfile.TemporaryDirectory(prefix="fmxbench") as tmp:
        work = Path(tmp)
        (work / "overhead.yaml").write_text(
            SWEEP.format(steps=args.steps, ckpt=max(1, args.steps // 3), seeds=list(range(args.trials)))
        )
        env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="fmxray", dir="/tmp")}
        start = time.perf_counter()
        done = subprocess.run([fmx, "sweep", "overhead.yaml"], cwd=work, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"fmx sweep failed:\n{done.stderr[-4000:]}")
        runs = pd.read_parquet(work / "results" / "overhead" / "runs.parquet")
        plan = subprocess.run([fmx, "sweep", "overhead.yaml", "--dry-run"], cwd=work, capture_output=True, text=True)
    per_trial = runs.groupby("trial_id")["compute_seconds"].first()
    settings = runs.groupby("trial_id").size().iloc[0]
    ideal = per_trial.sum() / args.slots
    startup = _startup_seconds(done.stderr)
    print(f"trials: {len(per_trial)} trainings x {settings} solver settings, {args.steps} steps each, {args.slots} slots")
    print(f"trial compute: {per_trial.sum():.1f} s in all (mean {per_trial.mean():.1f} s a trial)")
    print(f"ideal wall (compute / slots):      {ideal:8.1f} s")
    print(f"fmx sweep wall, whole command:     {wall:8.1f} s   ratio {wall / ideal:.3f}")
    if startup is not None:
        print(f"  of which start-up before trial 1: {startup:6.1f} s")
        print(f"fmx sweep wall, trials onwards:    {wall - startup:8.1f} s   ratio {(wall - startup) / ideal:.3f}")
    print(f"trainings: fmx ran {len(per_trial)}; a naive Tune grid over every axis runs {len(per_trial) * settings}"
          f" ({settings}x more)")
    print(plan.stdout.strip().splitlines()[-1])


def _startup_seconds(stderr: str) -> float | None:
    """Seconds from launch to the first trial start, from the timestamps fmx prints (if any)."""
    for line in stderr.splitlines():
        if line.startswith("[t+") and "▶" in line:
            return float(line[3:].split("s]", 1)[0])
    return None


if __name__ == "__main__":
    main()
