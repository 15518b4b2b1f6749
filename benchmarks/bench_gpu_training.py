"""Training throughput of the paper's CIFAR-10 U-Net (Table 3) through fmx against a bare PyTorch loop, side by
side in one run: (a) a bare loop, (b) fmx's loop in-process (Trainer.train_until, the loop both routes
run), (c) a one-worker TorchTrainer trial through `fmx sweep` (its steps/s read from the run's live MLflow
metrics); each in fp32 and bf16, with and without torch.compile. Then sampling (dopri5 at 1e-5: NFE, images/s)
and Hutchinson likelihood throughput.

Printed: steps/s, images/s, peak GPU memory, the ratios fmx/bare (goal >= 0.95) and bf16/fp32 (goal >= 1.8 on
a GPU), and the hours 391k steps at batch 256 would take on the GPUs used.

    python benchmarks/bench_gpu_training.py               # the paper's U-Net on the GPU (CUDA required)
    python benchmarks/bench_gpu_training.py --quick       # a small U-Net on the CPU, about a minute
    python benchmarks/bench_gpu_training.py --quick --compile --trainer   # also compiled, and the Ray route

Data are random uint8 images written as a CIFAR-10 python-pickle folder (fmx's own cifar10 loader reads them):
throughput does not depend on the pixels, and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from unet_throughput import (
    PAPER_BATCH, PAPER_STEPS, PAPER_UNET, SMALL_UNET, bare_loop, dopri5_sampling, fmx_steps_per_second,
    hutchinson_bits_per_dim, random_images, random_unet_field, sweep_config, timed_steps, write_fake_cifar,
)  # fmt: skip
from fm_core.models.unet import UNet, num_parameters  # after unet_throughput, which puts the repository on sys.path
from fm_core.sampling import SolverSetting


def trainer_steps_per_second(config: dict, folder: Path) -> float | None:
    """`fmx sweep` with one TorchTrainer worker; the median of the run's live steps_per_second points (the
    first, which includes start-up and compilation, left out)."""
    import yaml

    folder.mkdir(parents=True)
    (folder / "bench.yaml").write_text(yaml.safe_dump(config))
    repo = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "sweep", "bench.yaml"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=3600)  # fmt: skip
    if done.returncode != 0:
        print(f"  TorchTrainer route failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("bench_gpu_training")
    runs = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    points = [m.value for m in client.get_metric_history(runs[0].info.run_id, "steps_per_second")][1:]
    return statistics.median(points) if points else None


def sampling_and_likelihood(unet: dict, device: str, samples: int, points: int) -> dict[str, float]:
    field = random_unet_field(unet, device)
    sampling = dopri5_sampling(field, device, samples)
    likelihood = hutchinson_bits_per_dim(field, random_images(points), device, SolverSetting("euler", nfe_budget=20))
    return {"dopri5_nfe": sampling["nfe"], "images_per_second": sampling["images_per_second"],
            "likelihood_points_per_second_euler20": likelihood["points_per_second"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small U-Net on the CPU (about a minute)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (always on with a GPU)")
    parser.add_argument("--trainer", action="store_true", help="also the TorchTrainer route (always on with a GPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 256 on a GPU, 16 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of every route (the Ray worker's cpus_per_worker)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gpu = torch.cuda.is_available() and not args.quick
    device = "cuda" if gpu else "cpu"
    if not gpu and not args.quick:
        sys.exit("no CUDA GPU here: run with --quick for the CPU version")
    unet, batch = (PAPER_UNET, args.batch or PAPER_BATCH) if gpu else (SMALL_UNET, args.batch or 16)
    steps, warmup = args.steps or (50 if gpu else 6), 3 if gpu else 1
    compiles = [False, True] if (gpu or args.compile) else [False]
    name = torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    params = num_parameters(UNet(in_channels=3, image_size=32, **unet))
    print(f"device: {name}; U-Net {params / 1e6:.1f}M parameters; batch {batch}; {steps} timed steps after {warmup}")
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fake_cifar(Path(tmp) / "data", 5 * max(batch, 64))
        images = random_images(5 * max(batch, 64))
        for precision in ("fp32", "bf16"):
            for compiled in compiles:
                if gpu:
                    torch.cuda.reset_peak_memory_stats()
                bare = timed_steps(bare_loop(unet, batch, device, precision, compiled, images), steps, warmup, device)
                config = sweep_config(unet, batch, warmup + steps, root, precision, compiled, gpu, args.threads)
                fmx = fmx_steps_per_second(config, device, steps, warmup)
                peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
                trainer = None
                if gpu or args.trainer:
                    trainer = trainer_steps_per_second(config, Path(tmp) / f"trainer-{precision}-{compiled}")
                results.append({"precision": precision, "compile": compiled, "bare": bare, "fmx": fmx, "trainer": trainer, "peak_gib": peak})
        print(f"\n{'precision':>9} {'compile':>7} {'bare steps/s':>12} {'fmx steps/s':>11} {'fmx/bare':>8} {'trainer/bare':>12} "
              f"{'images/s (fmx)':>14} {'peak GiB':>8} {'h to 391k':>9}")  # fmt: skip
        for r in results:
            ratio_trainer = f"{r['trainer'] / r['bare']:.3f}" if r["trainer"] else "-"
            hours = PAPER_STEPS * PAPER_BATCH / (r["fmx"] * batch) / 3600  # the paper's examples at fmx's rate
            print(f"{r['precision']:>9} {str(r['compile']):>7} {r['bare']:>12.3f} {r['fmx']:>11.3f} {r['fmx'] / r['bare']:>8.3f} "
                  f"{ratio_trainer:>12} {r['fmx'] * batch:>14.1f} {r['peak_gib']:>8.2f} {hours:>9.1f}")  # fmt: skip
        for compiled in compiles:
            fp32 = next(r for r in results if r["precision"] == "fp32" and r["compile"] == compiled)
            bf16 = next(r for r in results if r["precision"] == "bf16" and r["compile"] == compiled)
            print(f"bf16/fp32 (compile={compiled}): bare {bf16['bare'] / fp32['bare']:.3f}, fmx {bf16['fmx'] / fp32['fmx']:.3f}")
        evaluation = sampling_and_likelihood(unet, device, samples=256 if gpu else 4, points=256 if gpu else 4)
        print("evaluation: " + json.dumps({k: round(v, 3) for k, v in evaluation.items()}))
        if not gpu:
            print("(CPU figures: they say nothing of a GPU; 'h to 391k' is for this machine and this model)")


if __name__ == "__main__":
    main()
