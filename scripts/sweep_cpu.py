"""Where the CPU time of one small sweep goes, per process: the driver, each trial's Ray worker, and Ray's own
processes (raylet, GCS, agents, monitors, prestarted workers).

The test suite is CPU-bound on this 2-core machine (both cores busy throughout a run), and most of its sweeps
train for a few dozen steps: their cost is start-up, imports and bookkeeping, not training. This script runs
`fmx sweep FILE` in a temporary folder (the embedded defaults: a local Ray, ./mlflow.db), samples every
descendant process's CPU time (user + system) every 0.1 s with psutil, and prints the seconds per process kind
and in all. A process's last 0.1 s may be missed, so the figures are slight underestimates; CPU time, unlike
wall time, changes little with the machine's load.

    python scripts/sweep_cpu.py sweeps/smoke.yaml [--repeat 3]
    python scripts/sweep_cpu.py sweeps/smoke.yaml --rerun    # a second run in the same folder: all reused
    PYTHONPATH=/path/to/other/checkout python scripts/sweep_cpu.py FILE     # another checkout's code

Used for the suite-time figures of issue 23's note.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

#: Words of a process's command line that say which kind of process it is, checked in this order (a Ray
#: worker's command line names the raylet's socket, so workers are told apart first).
KINDS = ("default_worker", "gcs_server", "dashboard_agent", "dashboard.py", "runtime_env", "log_monitor", "monitor.py", "raylet")
#: What a worker is called before it runs anything and between tasks: not yet what it is counted under.
UNNAMED_WORKERS = {"ray worker python3", "ray worker ray::IDLE", "unknown"}


def _kind(proc: psutil.Process, driver_pid: int) -> str:
    if proc.pid == driver_pid:
        return "driver (fmx sweep)"
    try:
        command = " ".join(proc.cmdline())
        name = proc.name()
    except psutil.Error:
        return "unknown"
    if name.startswith("ray::") and not name.endswith("Agent"):  # a worker, once it has renamed itself
        return f"ray worker {name}"
    for kind in KINDS:
        if kind in command:
            # A worker renames itself after what it runs (ray::IDLE, ray::ImplicitFunc, ray::_Inner...).
            if kind == "dashboard.py":
                return "dashboard (Ray's API server; started even with include_dashboard=False)"
            return f"ray worker {name}" if kind == "default_worker" else kind
    return name


def profile_once(sweep_file: Path, fmx: str, rerun: bool = False) -> dict[str, tuple[float, int]]:
    """CPU seconds and process count per kind for one run of the sweep in a fresh folder (with `rerun`, of
    its second run there, once the first, not measured, has finished every cell). Wall seconds as "wall"."""
    folder = Path(tempfile.mkdtemp(prefix="fmx-sweep-cpu-"))
    shutil.copy(sweep_file, folder / sweep_file.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_"))}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="fmxcpu", dir="/tmp")
    try:
        if rerun:
            subprocess.run([fmx, "sweep", sweep_file.name], cwd=folder, env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        began = time.monotonic()
        proc = subprocess.Popen([fmx, "sweep", sweep_file.name], cwd=folder, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        root = psutil.Process(proc.pid)
        seconds: dict[int, float] = {}
        kinds: dict[int, str] = {}
        while proc.poll() is None:
            try:
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                family = []
            for member in family:
                try:
                    times = member.cpu_times()
                except psutil.Error:
                    continue
                seconds[member.pid] = times.user + times.system
                kind = kinds.get(member.pid)
                # A worker is named after what it runs (ray::ImplicitFunc for a trial), and ray::IDLE again
                # between trials and at the end: it is counted under the first task it ran.
                if kind is None or kind in UNNAMED_WORKERS:
                    seen = _kind(member, proc.pid)
                    kinds[member.pid] = kind if seen == "unknown" and kind is not None else seen
            time.sleep(0.1)
        wall = time.monotonic() - began
        if proc.returncode != 0:
            raise SystemExit(f"fmx sweep {sweep_file.name} ended with exit code {proc.returncode} in {folder}")
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    totals: dict[str, tuple[float, int]] = collections.defaultdict(lambda: (0.0, 0))
    for pid, spent in seconds.items():
        total, count = totals[kinds[pid]]
        totals[kinds[pid]] = (total + spent, count + 1)
    return {**totals, "wall": (wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_file", type=Path)
    parser.add_argument("--repeat", type=int, default=1, help="runs of the sweep; the median of each kind is printed")
    parser.add_argument("--rerun", action="store_true", help="measure a second run in the same folder (all cells done)")
    args = parser.parse_args()
    fmx = str(Path(sys.executable).with_name("fmx"))
    measured = [profile_once(args.sweep_file.resolve(), fmx, args.rerun) for _ in range(args.repeat)]
    walls = [run.pop("wall")[0] for run in measured]
    runs: list[dict[str, tuple[float, int]]] = measured
    kinds = sorted({k for run in runs for k in run}, key=lambda k: -statistics.median(r.get(k, (0.0, 0))[0] for r in runs))
    what = "a rerun (every cell done)" if args.rerun else "a first run"
    print(f"{args.sweep_file}, {what}: CPU seconds per process kind, median of {args.repeat} run(s); load average at end "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    for kind in kinds:
        spent = statistics.median(r.get(kind, (0.0, 0))[0] for r in runs)
        count = max(r.get(kind, (0.0, 0))[1] for r in runs)
        print(f"  {spent:7.1f} s  x{count:<2d} {kind}")
    print(f"  {statistics.median(sum(s for s, _ in r.values()) for r in runs):7.1f} s  in all "
          f"(wall: {statistics.median(walls):.1f} s, median of {', '.join(f'{w:.1f}' for w in walls)})")


if __name__ == "__main__":
    main()
