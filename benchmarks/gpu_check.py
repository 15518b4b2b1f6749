"""Every GPU measurement fmx needs, in one command that fits a bare GPU machine (PyTorch and the scientific stack,
no Ray, no MLflow, no network) and about 8 minutes of one H100; one JSON and one Markdown summary.

    (a) training: the paper's CIFAR-10 U-Net (Table 3) by a bare PyTorch loop and by fmx's loop in-process, fp32
        and bf16, eager and torch.compile'd: steps/s, images/s, peak memory, fmx/bare, bf16/fp32, hours to 391k
        steps at batch 256
    (b) dopri5 sampling at tol 1e-5: NFE, images/s
    (c) Hutchinson bits/dim (fm_core.likelihood): points/s under euler NFE 20 and dopri5 at 1e-5
    (d) FID: a random-weight STAND-IN detector of Inception's cost (the real one cannot be fetched there): its
        features, fmx's reference statistics and the whole protocol (samples -> quantize -> features -> FID)
    (e) `fmx train` + `fmx eval` of a small U-Net with train.use_gpu, as subprocesses, without Ray

    python benchmarks/gpu_check.py                 # on a CUDA GPU (exits 2 without one)
    python benchmarks/gpu_check.py --quick         # everything tiny, on the CPU (figures: docs/benchmarks.md)
    python benchmarks/gpu_check.py --parts a,d     # some parts only

Each part runs in a process of its own under a time cap (the short ones first, training last with what is left
of --budget), so a part that fails or overruns is recorded with its error and the others still run; what a
part measured before its cap still comes back. Exit code 0 when the script ran (1 if every part failed).
Data are random: throughput does not depend on the pixels. Pieces it needs beyond PyTorch's stack: the wheel
list in docs/benchmarks.md ("GPU check").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

#: What fmx's science, training loop and `fmx train`/`fmx eval` import beyond PyTorch's stack (numpy, scipy,
#: torchdiffeq, typer, rich, matplotlib): the wheels docs/benchmarks.md downloads, at constraints.txt's versions.
WHEELS = ("pydantic==2.14.4", "pydantic_core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5",
          "typing_extensions==4.16.0", "PyYAML==6.0.4")  # fmt: skip
try:
    from gpu_check_parts import PARTS, REPO, Sizes, run_part, sizes_from_json, sizes_json
    from unet_throughput import PAPER_BATCH, PAPER_UNET, SMALL_UNET
except ModuleNotFoundError as missing:
    print(f"gpu_check: {missing}; install the wheels of docs/benchmarks.md (\"GPU check\") first:\n"
          f"  pip install --no-index --find-links wheels/ {' '.join(WHEELS)}", file=sys.stderr)  # fmt: skip
    sys.exit(2)

#: The short parts first; training takes what is left of the budget.
RUN_ORDER = ("b", "c", "d", "e", "a")
#: On one H100: the paper's U-Net is 153M parameters and 49 GFLOPs an image forward (FlopCounterMode), so a
#: training step at batch 256 is about 38 TFLOPs; about 29 GiB of activations (saved-tensor count on the CPU).
GPU = Sizes(mode="gpu", unet=PAPER_UNET, batch=PAPER_BATCH, steps=20, warmup=3, compile=True, compile_reserve_s=100,
            samples=256, points=64, detector={"features": 2048, "resize": 299, "width": 1.0}, detector_images=5000,
            fid_reference=10_000, fid_samples=1000, fid_batch=200, fid_nfe=10, eval_batch=500, local_unet=SMALL_UNET,
            local_steps=300, local_batch=128, local_samples=256, local_points=64, threads=None,
            caps={"b": 45, "c": 60, "d": 100, "e": 90})  # fmt: skip
QUICK = Sizes(mode="quick", unet=SMALL_UNET, batch=8, steps=3, warmup=1, compile=False, compile_reserve_s=0,
              samples=4, points=4, detector={"features": 64, "resize": 64, "width": 0.125}, detector_images=200,
              fid_reference=200, fid_samples=200, fid_batch=100, fid_nfe=4, eval_batch=100, local_unet=SMALL_UNET,
              local_steps=4, local_batch=8, local_samples=16, local_points=4, threads=1,
              caps={"a": 120, "b": 120, "c": 120, "d": 120, "e": 120})  # fmt: skip
TINY = replace(QUICK, mode="tiny", batch=4, steps=2, samples=2, points=2, detector_images=50, fid_reference=64, fid_samples=64,
               fid_batch=32, fid_nfe=2, eval_batch=64, local_steps=2, local_samples=4, local_points=2)  # fmt: skip
BUDGET_S = {"gpu": 460.0, "quick": 600.0, "tiny": 600.0}


def environment() -> dict[str, Any]:
    """What ran: versions, the device, and whether Ray and MLflow could be imported here."""
    from importlib import metadata, util

    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    def importable(name: str) -> bool:
        try:
            return util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    cuda = torch.cuda.is_available()
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True,
                                timeout=10, check=False).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "device": torch.cuda.get_device_name() if cuda else "cpu",
        "gpus": torch.cuda.device_count() if cuda else 0, "cpu_count": os.cpu_count(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "packages": {n: installed(n) for n in ("numpy", "scipy", "torchdiffeq", "pydantic", "PyYAML", "typer", "rich",
                                               "matplotlib", "pandas", "pyarrow", "torchmetrics", "torchvision")},
        "ray_importable": importable("ray"), "mlflow_importable": importable("mlflow"), "fmx_commit": commit or None,
    }  # fmt: skip


def run_child(key: str, sizes: Sizes, device: str, folder: Path, t0: float, timeout: float) -> dict[str, Any]:
    """Part `key` in a fresh process (its own session, so a cap also stops the `fmx` processes it started)."""
    name, title, _ = PARTS[key]
    result, stderr = folder / f"{key}_{name}.json", folder / "logs" / f"{key}_{name}.stderr"
    stderr.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--run-part", key, "--device", device, "--result", str(result),
               "--sizes", sizes_json(sizes), "--t0", repr(t0), "--deadline", repr(time.time() + timeout - 5)]  # fmt: skip
    start = time.perf_counter()
    timed_out = False
    with open(stderr, "w") as err:
        child = subprocess.Popen(command, stderr=err, start_new_session=True)
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(child.pid, signal.SIGKILL)
            code = child.wait()
        except BaseException:  # Ctrl-C: stop the part, then let the caller write what there is
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
    part = json.loads(result.read_text()) if result.is_file() else {"units": [], "skipped": [], "notes": [], "derived": {}}
    result.unlink(missing_ok=True)
    tail = "\n".join(stderr.read_text(errors="replace").strip().splitlines()[-15:])
    if timed_out:
        status, part["error"] = "timed out", f"stopped at its {timeout:.0f} s cap; {len(part['units'])} unit(s) finished"
    elif not part.get("finished"):
        status, part["error"] = "failed", f"the part's process exited with {code} before finishing: {tail[-1500:]}"
    elif part.get("error"):
        status = "failed"
    else:
        cut = part.get("unit_failures") or any("time left" in s["why"] for s in part["skipped"])
        status = "partial" if cut else "ok"
    return {"key": key, "name": name, "title": title, "status": status, "seconds": time.perf_counter() - start,
            "cap_s": timeout, **part, "stderr_log": str(stderr.relative_to(folder))}  # fmt: skip


def markdown(summary: dict[str, Any]) -> str:
    """The Markdown summary: environment, one line a part, then each part's table, notes and errors."""
    env = summary["environment"]
    lines = [f"# fmx GPU check ({summary['mode']})", "",
             f"{summary['started']}, {summary['seconds']:.0f} s in all; `{summary['command']}`", "",
             (f"Device: **{env['device']}** (torch {env['torch']}, CUDA {env['cuda']}, Python {env['python']}, "
              f"{env['cpu_count']} CPUs); Ray importable: {env['ray_importable']}, MLflow importable: "
              f"{env['mlflow_importable']}; fmx {env['fmx_commit']}."), ""]  # fmt: skip
    if summary["mode"] != "gpu":
        lines += [f"**{summary['mode']}: a small U-Net on the CPU. These figures say nothing about a GPU.**", ""]
    lines += ["| part | what | status | seconds |", "|---|---|---|---:|"]
    lines += [f"| ({p['key']}) | {p['title']} | {p['status']} | {p['seconds']:.1f} |" for p in summary["parts"]]
    for p in summary["parts"]:
        lines += ["", f"## ({p['key']}) {p['title']}", "", f"Status: **{p['status']}** in {p['seconds']:.1f} s (cap {p['cap_s']:.0f} s)."]
        lines += ([""] + [f"- {n}" for n in p["notes"]]) if p["notes"] else []
        if p["units"]:
            columns = list(dict.fromkeys(k for u in p["units"] for k in u))
            lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_cell(u.get(c)) for c in columns) + " |" for u in p["units"]]
        after = [f"- {k}: {_cell(v)}" for k, v in p["derived"].items()] + [f"- skipped {s['unit']}: {s['why']}" for s in p["skipped"]]
        lines += ([""] + after) if after else []
        if p.get("error"):
            lines += ["", "Error:", "", "```text", p["error"], "```", f"(stderr: {p['stderr_log']})"]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="everything tiny, on the CPU")
    parser.add_argument("--tiny", action="store_true", help="smaller still than --quick (the test suite's run)")
    parser.add_argument("--out-dir", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"),
                        help="folder of the summaries and logs (default: $OUT, else ./gpu_check_out)")  # fmt: skip
    parser.add_argument("--out", default="gpu_check", help="the summaries' name: OUT.json and OUT.md")
    parser.add_argument("--parts", default=",".join(PARTS), help="which parts, e.g. a,d (default: all)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all parts (default: 460 on a GPU)")
    for hidden in ("--run-part", "--device", "--result", "--sizes", "--t0", "--deadline"):  # a part's own process
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_part:
        run_part(args.run_part, sizes_from_json(args.sizes), args.device, Path(args.result), float(args.t0), float(args.deadline))
        return 0

    quick = args.quick or args.tiny
    if not quick and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); run with --quick for the CPU version",
              file=sys.stderr)  # fmt: skip
        return 2
    sizes = TINY if args.tiny else QUICK if quick else GPU
    device = "cpu" if quick else "cuda"
    asked = [k.strip() for k in args.parts.split(",") if k.strip()]
    if not asked or set(asked) - set(PARTS):
        print(f"gpu_check: --parts {args.parts!r}: choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    keys = [k for k in RUN_ORDER if k in asked]
    budget = args.budget or BUDGET_S[sizes.mode]
    folder = args.out_dir
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    summary: dict[str, Any] = {
        "fmx_gpu_check": 1, "mode": sizes.mode, "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"), "budget_s": budget,
        "environment": environment(), "sizes": asdict(sizes), "parts": [],
    }  # fmt: skip
    print(f"gpu_check ({sizes.mode}) on {summary['environment']['device']}: parts {', '.join(sorted(keys))}, "
          f"budget {budget:.0f} s; summaries in {folder}", flush=True)  # fmt: skip
    cache = tempfile.mkdtemp(prefix="gpu_check_cache")
    os.environ["FMX_CACHE_DIR"] = cache  # FID reference statistics and the like: nothing kept
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    parts: dict[str, dict[str, Any]] = {}
    try:
        for i, key in enumerate(keys):
            left = budget - (time.time() - t0)
            # A capped part gets its cap; the one without (training, run last) what the later caps leave.
            timeout = min(sizes.caps[key], left) if key in sizes.caps else left - sum(sizes.caps.get(k, 0) for k in keys[i + 1 :])
            if timeout < 10:
                name, title, _ = PARTS[key]
                parts[key] = {"key": key, "name": name, "title": title, "status": "skipped", "seconds": 0.0, "cap_s": 0.0,
                              "units": [], "skipped": [], "notes": [], "derived": {},
                              "error": f"not run: {left:.0f} s of the {budget:.0f} s budget left", "stderr_log": ""}  # fmt: skip
                continue
            parts[key] = run_child(key, sizes, device, folder, t0, timeout)
            print(f"[{time.time() - t0:6.1f} s] ({key}) {parts[key]['name']}: {parts[key]['status']} "
                  f"in {parts[key]['seconds']:.1f} s", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        summary["parts"] = [parts[k] for k in sorted(parts)]
        summary["seconds"] = time.time() - t0
        json_path, md_path = folder / f"{args.out}.json", folder / f"{args.out}.md"
        json_path.write_text(json.dumps(summary, indent=1, default=str) + "\n")
        md_path.write_text(markdown(summary))
        print(f"wrote {json_path} and {md_path} ({summary['seconds']:.0f} s)", flush=True)
    ran = [p for p in summary["parts"] if p["status"] in ("ok", "partial")]
    return 0 if ran or not summary["parts"] else 1


if __name__ == "__main__":
    sys.exit(main())
