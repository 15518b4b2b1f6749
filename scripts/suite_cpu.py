"""Where the CPU time of a whole test run goes, per process kind: the pytest workers, the `fmx` commands the
tests run (by subcommand), the trials' Ray workers, Ray's own processes, MLflow servers.

The README's test command is CPU-bound on this 2-core machine: its wall time is about its CPU time over the
two cores' busy share. scripts/sweep_cpu.py looks at one sweep; this looks at the suite. It runs COMMAND
(default: the README's test command, read from the README), samples every process that appears meanwhile
every 0.5 s (psutil; processes shorter than that are missed or cut, so the figures are slight underestimates)
and prints CPU seconds and process counts per kind, the total, and the share of the two cores it kept busy.

    python scripts/suite_cpu.py                              # the README's test command
    python scripts/suite_cpu.py -- .venv/bin/python -m pytest -q -n 2 tests/test_faults.py

Used for the suite-time figures of issue 23's note.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_cpu import UNNAMED_WORKERS, _kind as ray_kind  # noqa: E402  (the same names for Ray's processes)

REPO = Path(__file__).resolve().parent.parent


def readme_test_command() -> list[str]:
    line = next(line for line in (REPO / "README.md").read_text().splitlines() if re.match(r"^\.venv/bin/python -m pytest", line))
    return shlex.split(line)


def kind_of(proc: psutil.Process) -> str:
    """A kind name for `proc`: Ray's as scripts/sweep_cpu.py names them, else what the command line says."""
    try:
        command = " ".join(proc.cmdline())
        name = proc.name()
    except psutil.Error:
        return "unknown"
    if name.startswith("ray::") or any(k in command for k in ("default_worker", "gcs_server", "raylet", "dashboard", "runtime_env", "log_monitor", "monitor.py")):
        return ray_kind(proc, -1)
    if "bin/fmx" in command:
        words = command.split("bin/fmx", 1)[1].split()
        return f"fmx {words[0] if words else ''}".strip()
    if "exec(eval(sys.stdin" in command:
        return "pytest-xdist worker"
    if "pytest" in command:
        return "pytest controller"
    if "mlflow" in command and "server" in command or "uvicorn" in command or "gunicorn" in command:
        return "MLflow server"
    if "orchestrator.cli" in command:
        return "fmx (python -m orchestrator.cli)"
    return f"other: {name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run (default: the README's tests)")
    args = parser.parse_args()
    command = [c for c in args.command if c != "--"] or readme_test_command()
    began = time.monotonic()
    start_epoch = time.time()
    proc = subprocess.Popen(command, cwd=REPO)
    me = os.getpid()
    seconds: dict[tuple[int, float], float] = {}
    kinds: dict[tuple[int, float], str] = {}
    while proc.poll() is None:
        for member in psutil.process_iter():
            try:
                key = (member.pid, member.create_time())
                if member.pid == me or key[1] < start_epoch - 1:
                    continue  # this script, or a process that was there before the command
                times = member.cpu_times()
                seconds[key] = times.user + times.system
                kind = kinds.get(key)
                if kind is None or kind in UNNAMED_WORKERS:  # a Ray worker: counted under the first task it ran
                    seen = kind_of(member)
                    kinds[key] = kind if seen == "unknown" and kind is not None else seen
            except psutil.Error:
                continue
        time.sleep(0.5)
    wall = time.monotonic() - began
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for key, spent in seconds.items():
        totals[kinds[key]][0] += spent
        totals[kinds[key]][1] += 1
    total = sum(s for s, _ in totals.values())
    print(f"{shlex.join(command)}: exit code {proc.returncode}, {wall:.0f} s of wall time, {total:.0f} s of CPU "
          f"({total / (wall * (os.cpu_count() or 1)):.0%} of {os.cpu_count()} cores)")  # fmt: skip
    for kind, (spent, count) in sorted(totals.items(), key=lambda item: -item[1][0]):
        if spent >= 1.0:
            print(f"  {spent:8.1f} s  {int(count):4d} processes  {kind}")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
