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
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fm_core.data import from_uint8  # noqa: E402
from fm_core.models.unet import UNet, num_parameters  # noqa: E402
from fm_core.precision import Precision  # noqa: E402

PAPER_STEPS, PAPER_BATCH = 391_000, 256
#: Table 3's CIFAR-10 U-Net (fmx's sweeps/cifar10.yaml) and a small one that a CPU trains in seconds.
PAPER_UNET = {"model_channels": 256, "num_res_blocks": 2, "channel_mult": [1, 2, 2, 2], "attention_resolutions": [16],
              "num_heads": 4, "num_head_channels": 64}  # fmt: skip
SMALL_UNET = {"model_channels": 16, "num_res_blocks": 1, "channel_mult": [1, 2], "attention_resolutions": [16],
              "num_heads": 2, "num_head_channels": -1}  # fmt: skip


def write_fake_cifar(root: Path, images: int) -> Path:
    """Random uint8 images in CIFAR-10's python-pickle layout (5 train batches + test_batch)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per = max(1, images // 5)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per, 3072), dtype=np.uint8), b"labels": [0] * per}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_steps(step: Callable[[], None], steps: int, warmup: int, device: str) -> float:
    """Steps per second over `steps` after `warmup` untimed ones (compilation happens there)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps / (time.perf_counter() - start)


def bare_loop(unet: dict, batch: int, device: str, precision: str, compile_model: bool, images: torch.Tensor) -> Callable[[], None]:
    """The minimal loop fmx is measured against: OT-path FM loss, Adam, no logging, no checks."""
    torch.manual_seed(0)
    model = UNet(in_channels=3, image_size=32, **unet).to(device)
    net = torch.compile(model) if compile_model else model
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    mixed = Precision(precision, torch.device(device).type)
    data = images.to(device)

    def step() -> None:
        x1 = from_uint8(data[torch.randint(0, len(data), (batch,), device=device)])
        x0 = torch.randn_like(x1)
        t = torch.rand(batch, device=device)
        xt = t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0
        with mixed.autocast():
            loss = torch.nn.functional.mse_loss(net(xt, t).float(), x1 - x0)
        optimizer.zero_grad(set_to_none=True)
        (mixed.scaler.scale(loss) if mixed.scaler else loss).backward()
        if mixed.scaler:
            mixed.scaler.step(optimizer)
            mixed.scaler.update()
        else:
            optimizer.step()

    return step


def sweep_config(unet: dict, batch: int, steps: int, root: Path, precision: str, compile_model: bool, use_gpu: bool,
                 threads: int) -> dict:  # fmt: skip
    return {
        "name": "bench_gpu_training",
        "dataset": {"name": "cifar10", "root": str(root)},
        "model": {"kind": "unet", **unet},
        "train": {"steps": steps, "batch_size": batch, "lr": 5e-4, "log_every": max(1, steps // 10), "checkpoint_every": steps,
                  "precision": precision, "compile": compile_model, "use_gpu": use_gpu, "torch_trainer": True,
                  "cpus_per_worker": threads},
        "eval": {"samples": 8, "likelihood_points": 0, "reference_tol": None, "likelihood": {"solver": "euler", "nfe": 2}},
        "grid": {"pairs": [["ot", "fm"]], "seed": [0], "solver": ["euler"], "nfe": [2]},
    }  # fmt: skip


def fmx_runner(config: dict, device: str):  # -> TrialParts
    from orchestrator.validation import parse_sweep
    from orchestrator.plan import plan_sweep
    from orchestrator.training_loop import TrialParts

    parsed = parse_sweep(config)
    key = plan_sweep(parsed).trainings[0]
    return TrialParts.build(parsed.for_training(key), key, device=device)


def fmx_steps_per_second(config: dict, device: str, steps: int, warmup: int) -> float:
    runner = fmx_runner(config, device)
    runner.trainer.train_until(warmup)
    synchronize(device)
    start = time.perf_counter()
    runner.trainer.train_until(warmup + steps, on_log=lambda step, values: None)  # live values computed as in a sweep
    synchronize(device)
    return steps / (time.perf_counter() - start)


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
    from fm_core.likelihood import log_likelihood
    from fm_core.sampling import SolverSetting, sample

    torch.manual_seed(0)
    model = UNet(in_channels=3, image_size=32, **unet).to(device).eval()
    field = lambda t, x: model(x, t)  # noqa: E731 - an untrained field: NFE reflects the solver, not the model
    dopri5 = SolverSetting.adaptive("dopri5", 1e-5)
    x0 = torch.randn(samples, 3, 32, 32, device=device)
    synchronize(device)
    start = time.perf_counter()
    solution = sample(field, x0, dopri5)
    synchronize(device)
    sample_seconds = time.perf_counter() - start
    x1 = torch.randn(points, 3, 32, 32, device=device)
    start = time.perf_counter()
    log_likelihood(field, x1, SolverSetting("euler", nfe_budget=20), divergence="hutchinson")
    synchronize(device)
    return {"dopri5_nfe": float(solution.nfe), "images_per_second": samples / sample_seconds,
            "likelihood_points_per_second_euler20": points / (time.perf_counter() - start)}  # fmt: skip


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
        images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5 * max(batch, 64), 3, 32, 32), dtype=np.uint8))
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
