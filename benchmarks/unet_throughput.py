"""The measurements bench_gpu_training.py and gpu_check.py share: the paper's CIFAR-10 U-Net trained by a bare
PyTorch loop and by fmx's loop in-process, dopri5 sampling and Hutchinson likelihood throughput, on random data
written in CIFAR-10's pickle layout (throughput does not depend on the pixels; nothing is downloaded).

Imported by those scripts from this folder (benchmarks/ is not a package); needs neither Ray nor MLflow.
"""

from __future__ import annotations

import gc
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fm_core.data import from_uint8
from fm_core.likelihood import bits_per_dim, log_likelihood
from fm_core.models.unet import UNet, num_parameters
from fm_core.precision import Precision
from fm_core.sampling import SolverSetting, sample
from orchestrator.plan import plan_sweep
from orchestrator.training_loop import TrialParts
from orchestrator.validation import parse_sweep

PAPER_STEPS, PAPER_BATCH = 391_000, 256
#: Table 3's CIFAR-10 U-Net (fmx's sweeps/cifar10.yaml) and a small one that a CPU trains in seconds.
PAPER_UNET = {"model_channels": 256, "num_res_blocks": 2, "channel_mult": [1, 2, 2, 2], "attention_resolutions": [16],
              "num_heads": 4, "num_head_channels": 64}  # fmt: skip
SMALL_UNET = {"model_channels": 16, "num_res_blocks": 1, "channel_mult": [1, 2], "attention_resolutions": [16],
              "num_heads": 2, "num_head_channels": -1}  # fmt: skip

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


def random_images(count: int, size: int = 32) -> torch.Tensor:
    """(count, 3, size, size) random uint8 images, the same every call."""
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (count, 3, size, size), dtype=np.uint8))


def forward_flops(forward: Callable[[], Any]) -> float:
    """Floating-point operations of `forward()` without gradients, by PyTorch's FlopCounterMode (2 per
    multiply-add; convolutions and matrix products only)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        forward()
    return float(counter.get_total_flops())


def unet_size(unet: dict) -> tuple[float, float]:
    """The U-Net's parameters (millions) and forward GFLOPs per 32x32 image, counted on the CPU."""
    model = UNet(in_channels=3, image_size=32, **unet)
    return num_parameters(model) / 1e6, forward_flops(lambda: model(torch.zeros(1, 3, 32, 32), torch.zeros(1))) / 1e9


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    """Free what earlier measurements left and restart the GPU's peak-memory count (nothing on a CPU)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    """The GPU's peak allocated memory since reset_peak, in GiB (None on a CPU)."""
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


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
                 threads: int, evaluation: dict[str, Any] | None = None, **train: Any) -> dict:  # fmt: skip
    """A one-training sweep of the U-Net on the CIFAR-10 folder `root` (`evaluation`: its eval section; `train`:
    more train settings, e.g. sweeps/cifar10.yaml's ema_decay)."""
    return {
        "name": "bench_gpu_training",
        "dataset": {"name": "cifar10", "root": str(root)},
        "model": {"kind": "unet", **unet},
        "train": {"steps": steps, "batch_size": batch, "lr": 5e-4, "log_every": max(1, steps // 10), "checkpoint_every": steps,
                  "precision": precision, "compile": compile_model, "use_gpu": use_gpu, "torch_trainer": True,
                  "cpus_per_worker": threads, **train},
        "eval": evaluation or {"samples": 8, "likelihood_points": 0, "reference_tol": None, "likelihood": {"solver": "euler", "nfe": 2}},
        "grid": {"pairs": [["ot", "fm"]], "seed": [0], "solver": ["euler"], "nfe": [2]},
    }  # fmt: skip


def fmx_runner(config: dict, device: str) -> TrialParts:
    """fmx's model state, trainer and evaluator for the sweep's one training, as a trial builds them."""
    parsed = parse_sweep(config)
    key = plan_sweep(parsed).trainings[0]
    return TrialParts.build(parsed.for_training(key), key, device=device)


def fmx_steps_per_second(config: dict, device: str, steps: int, warmup: int, runner: TrialParts | None = None) -> float:
    """Steps/s of fmx's training loop (Trainer.train_until) over `steps` after `warmup` untimed ones."""
    runner = runner or fmx_runner(config, device)
    runner.trainer.train_until(warmup)
    synchronize(device)
    start = time.perf_counter()
    runner.trainer.train_until(warmup + steps, on_log=lambda step, values: None)  # live values computed as in a sweep
    synchronize(device)
    return steps / (time.perf_counter() - start)


def random_unet_field(unet: dict, device: str) -> Field:
    """An untrained U-Net's field (t, x) -> v: the NFE an adaptive solver takes reflects the solver, not a model."""
    torch.manual_seed(0)
    model = UNet(in_channels=3, image_size=32, **unet).to(device).eval()
    return lambda t, x: model(x, t)


def dopri5_sampling(field: Field, device: str, samples: int, tol: float = 1e-5) -> dict[str, float]:
    """dopri5 at atol = rtol = `tol` from `samples` noise images at once: NFE, seconds, images/s."""
    x0 = torch.randn(samples, 3, 32, 32, device=device)
    synchronize(device)
    start = time.perf_counter()
    with torch.no_grad():
        solution = sample(field, x0, SolverSetting.adaptive("dopri5", tol))
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"nfe": float(solution.nfe), "seconds": seconds, "images_per_second": samples / seconds}


def hutchinson_bits_per_dim(field: Field, images: torch.Tensor, device: str, setting: SolverSetting) -> dict[str, float]:
    """fm_core.likelihood's bits/dim of uint8 `images` (one dequantization draw, Hutchinson divergence with a
    Rademacher probe) under `setting`: NFE, seconds, points/s, and whether every value came out finite."""
    nfes: list[int] = []

    def log_prob(z: torch.Tensor) -> torch.Tensor:
        result = log_likelihood(field, z.to(device), setting, divergence="hutchinson")
        nfes.append(result.nfe)
        return result.log_prob.detach().cpu()

    g = torch.Generator().manual_seed(0)
    synchronize(device)
    start = time.perf_counter()
    bpd = bits_per_dim(log_prob, images, num_draws=1, generator=g)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"nfe": float(nfes[0]), "seconds": seconds, "points_per_second": len(images) / seconds,
            "finite": bool(torch.isfinite(bpd).all())}  # fmt: skip
