"""The five measurements of gpu_check.py, each run by it in a process of its own: (a) training throughput,
(b) dopri5 sampling, (c) Hutchinson bits/dim, (d) FID on a random-weight stand-in detector, (e) `fmx train` and
`fmx eval` without Ray. A part records each finished unit at once (PartLog), so a part stopped at its time cap
still hands back what it measured; sizes come from gpu_check's presets (Sizes).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from unet_throughput import (
    PAPER_BATCH, PAPER_STEPS, bare_loop, dopri5_sampling, fmx_runner, fmx_steps_per_second, hutchinson_bits_per_dim,
    peak_gib, random_images, random_unet_field, reset_peak, sweep_config, synchronize, timed_steps, unet_size,
    write_fake_cifar,
)  # fmt: skip
from fid_standin import InceptionLikeStandIn, flops_per_image, save_standin
from fm_core.fid import batches, detector_features, fid as frechet, load_detector  # after unet_throughput, which puts the repository on sys.path
from fm_core.precision import Precision
from fm_core.sampling import SolverSetting
from orchestrator.fid_evaluation import FidMeter

REPO = Path(__file__).resolve().parent.parent
#: What sweeps/cifar10.yaml trains with beyond the bare loop's work (its warm-up length changes no step's cost);
#: every fmx unit logs every log_every steps as it does. PAPER_OPTIONS marks the unit that uses them all.
PAPER_TRAIN = {"log_every": 100, "lr_schedule": "poly", "grad_clip": 1.0, "ema_decay": 0.9999}
PAPER_OPTIONS = ("fp32", "paper")
CIFAR10_TEST, FID_SAMPLES = 10_000, 50_000  # what a full likelihood and a full FID evaluation cover


@dataclass(frozen=True)
class Sizes:
    """How big every part's work is: `gpu` is sized for 8 minutes of one H100 (not yet run on one), `quick` and
    `tiny` for a CPU."""

    mode: str
    unet: dict[str, Any]
    batch: int
    steps: int
    warmup: int
    compile: bool
    compile_reserve_s: float  # a compiled pair starts only with this much of its part's time left
    samples: int
    points: int
    detector: dict[str, Any]
    detector_images: int
    fid_reference: int
    fid_samples: int
    fid_batch: int
    fid_nfe: int  # the whole FID protocol samples with midpoint at this NFE
    eval_batch: int
    local_unet: dict[str, Any]
    local_steps: int
    local_batch: int
    local_samples: int
    local_points: int
    threads: int | None  # torch threads of every part (None: PyTorch's default)
    caps: dict[str, float] = field(default_factory=dict)  # seconds per part; a part absent here gets what is left


class PartLog:
    """What one part measured, written to `result` (JSON) after every unit, with progress lines on stdout."""

    def __init__(self, key: str, name: str, result: Path, t0: float, deadline: float) -> None:
        self.key, self.name, self.result, self.t0, self.deadline = key, name, result, t0, deadline
        self.data: dict[str, Any] = {"units": [], "skipped": [], "notes": [], "derived": {}, "finished": False, "error": None}

    def say(self, text: str) -> None:
        print(f"[{time.time() - self.t0:6.1f} s] ({self.key}) {self.name}: {text}", flush=True)

    def left(self) -> float:
        return self.deadline - time.time()

    def unit(self, label: str, **values: Any) -> None:
        self.data["units"].append({"unit": label, **values})
        self.write()
        self.say(f"{label}: " + ", ".join(f"{k} {_short(v)}" for k, v in values.items()))

    def skip(self, label: str, why: str) -> None:
        self.data["skipped"].append({"unit": label, "why": why})
        self.write()
        self.say(f"{label}: skipped ({why})")

    @contextlib.contextmanager
    def attempt(self, label: str) -> Iterator[None]:
        """Run one unit; an error in it (a GPU out of memory, a compiler failure) is recorded and the part goes on."""
        try:
            yield
        except Exception as err:  # noqa: BLE001
            self.data["unit_failures"] = self.data.get("unit_failures", 0) + 1
            self.skip(label, f"failed: {type(err).__name__}: {err}".strip()[:600])

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.write()

    def derive(self, name: str, value: float) -> None:
        self.data["derived"][name] = value
        self.write()
        self.say(f"{name} = {_short(value)}")

    def write(self) -> None:
        tmp = self.result.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.result)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------------------------
# (a) training: bare loop vs fmx's loop
# --------------------------------------------------------------------------------------------


def training(log: PartLog, sizes: Sizes, device: str) -> None:
    batch = sizes.batch
    params, gflops = unet_size(sizes.unet)
    log.note(f"U-Net {params:.1f}M parameters, {gflops:.2f} GFLOPs an image forward (FlopCounterMode), batch {batch}, "
             f"{sizes.steps} timed steps after {sizes.warmup} untimed ones (compilation happens there); random "
             "CIFAR-shaped data")  # fmt: skip
    pairs = [("fp32", False), ("bf16", False), PAPER_OPTIONS] + ([("bf16", True), ("fp32", True)] if sizes.compile else [])
    if not sizes.compile:
        log.skip("fp32/bf16 compiled", f"{sizes.mode}: torch.compile is measured on the GPU only")
    rates: dict[tuple[str, bool], float] = {}
    bare_rates: dict[tuple[str, bool], tuple[float, float | None]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        images = random_images(5 * max(batch, 64))
        root = write_fake_cifar(Path(tmp) / "data", len(images))
        for pair in pairs:
            paper = pair is PAPER_OPTIONS
            precision, compiled = ("fp32", False) if paper else pair
            label = "fp32 eager, fmx with sweeps/cifar10.yaml's options (bare: fp32 eager's)" if paper else \
                f"{precision} {'compiled' if compiled else 'eager'}"  # fmt: skip
            if compiled and log.left() < sizes.compile_reserve_s:
                log.skip(label, f"{log.left():.0f} s of the part's time left, under the {sizes.compile_reserve_s:.0f} s kept for compiling")
                continue
            with log.attempt(label):
                if not paper:
                    bare_rates[pair] = _bare_rate(sizes, device, precision, compiled, images)
                bare, bare_peak = bare_rates[(precision, compiled)]  # a KeyError where that bare loop failed
                fmx, fmx_peak, fallback = _fmx_rate(sizes, device, root, precision, compiled, paper)
                if not paper:
                    rates[pair] = fmx
                log.unit(label, bare_steps_s=bare, fmx_steps_s=fmx, fmx_over_bare=fmx / bare, fmx_images_s=fmx * batch,
                         bare_peak_gib=bare_peak, fmx_peak_gib=fmx_peak,
                         hours_391k_b256=PAPER_STEPS * PAPER_BATCH / (fmx * batch) / 3600,
                         **({"fmx_compile_failed": fallback} if fallback else {}))  # fmt: skip
    for compiled in (False, True):
        if ("fp32", compiled) in rates and ("bf16", compiled) in rates:
            log.derive(f"fmx bf16/fp32 ({'compiled' if compiled else 'eager'})", rates[("bf16", compiled)] / rates[("fp32", compiled)])
    if device != "cuda":
        log.note("CPU figures: bf16 is emulated on a CPU, and 'hours_391k_b256' is this machine with this model")


def _bare_rate(sizes: Sizes, device: str, precision: str, compiled: bool, images: torch.Tensor) -> tuple[float, float | None]:
    """The bare loop's steps/s and peak GiB (a function of its own: its model is freed when it returns or fails)."""
    reset_peak(device)
    rate = timed_steps(bare_loop(sizes.unet, sizes.batch, device, precision, compiled, images), sizes.steps, sizes.warmup, device)
    return rate, peak_gib(device)


def _fmx_rate(sizes: Sizes, device: str, root: Path, precision: str, compiled: bool, paper: bool) -> tuple[float, float | None, str | None]:
    """fmx's loop: steps/s, peak GiB, and why torch.compile fell back to eager (None: it did not)."""
    reset_peak(device)
    options = PAPER_TRAIN if paper else {"log_every": PAPER_TRAIN["log_every"]}
    config = sweep_config(sizes.unet, sizes.batch, sizes.warmup + sizes.steps, root, precision, compiled, device == "cuda",
                          sizes.threads or 1, **options)  # fmt: skip
    if paper:
        config["dataset"]["hflip"] = True
    runner = fmx_runner(config, device)
    rate = fmx_steps_per_second(config, device, sizes.steps, sizes.warmup, runner)
    compiled_net = runner.trainer._compiled  # (net, CompiledOrEager) once fmx compiled
    return rate, peak_gib(device), compiled_net[1].failed if compiled_net is not None else None


# --------------------------------------------------------------------------------------------
# (b) sampling and (c) likelihood
# --------------------------------------------------------------------------------------------


def sampling(log: PartLog, sizes: Sizes, device: str) -> None:
    velocity = random_unet_field(sizes.unet, device)
    with torch.no_grad():  # warm-up: CUDA context, kernels chosen
        velocity(torch.zeros(sizes.samples, device=device), torch.zeros(sizes.samples, 3, 32, 32, device=device))
    log.note(f"U-Net {unet_size(sizes.unet)[0]:.1f}M parameters, freshly built, {sizes.samples} images in one solve. "
             "Its output layer starts at zero (ADM-style), so the field is zero and the NFE is dopri5's floor, not a "
             "trained model's: a trained one takes more; net_evals_s (images x NFE / s) scales to any NFE")  # fmt: skip
    if device != "cuda":
        log.skip("dopri5 tol 1e-5, bf16", "bf16 sampling is measured on the GPU only (a CPU emulates it)")
    for precision in ("fp32", "bf16") if device == "cuda" else ("fp32",):
        with log.attempt(f"dopri5 tol 1e-5, {precision}"):
            reset_peak(device)
            with Precision(precision, torch.device(device).type).autocast():
                r = dopri5_sampling(velocity, device, sizes.samples)
            log.unit(f"dopri5 tol 1e-5, {precision}", images=sizes.samples, nfe=r["nfe"], seconds=r["seconds"],
                     images_s=r["images_per_second"], net_evals_s=r["images_per_second"] * r["nfe"],
                     s_per_50k=FID_SAMPLES / r["images_per_second"], peak_gib=peak_gib(device))  # fmt: skip


def likelihood(log: PartLog, sizes: Sizes, device: str) -> None:
    velocity = random_unet_field(sizes.unet, device)
    images = random_images(sizes.points)
    hutchinson_bits_per_dim(velocity, images[:2], device, SolverSetting("euler", nfe_budget=2))  # warm-up
    log.note(f"bits/dim of {sizes.points} random uint8 images (one dequantization draw, Hutchinson with a Rademacher "
             "probe: a forward and a vector-Jacobian product per NFE) under a freshly built U-Net, all points in one "
             "solve; as in (b) its field is zero, so dopri5's NFE is its floor; net_evals_s = points x NFE / s")  # fmt: skip
    for label, setting in (("euler NFE 20", SolverSetting("euler", nfe_budget=20)),
                           ("dopri5 tol 1e-5", SolverSetting.adaptive("dopri5", 1e-5))):  # fmt: skip
        with log.attempt(label):
            reset_peak(device)
            r = hutchinson_bits_per_dim(velocity, images, device, setting)
            log.unit(label, points=sizes.points, nfe=r["nfe"], seconds=r["seconds"], points_s=r["points_per_second"],
                     net_evals_s=r["points_per_second"] * r["nfe"], s_per_10k=CIFAR10_TEST / r["points_per_second"],
                     finite=r["finite"], peak_gib=peak_gib(device))  # fmt: skip


# --------------------------------------------------------------------------------------------
# (d) FID
# --------------------------------------------------------------------------------------------


def fid(log: PartLog, sizes: Sizes, device: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        standin = InceptionLikeStandIn(**sizes.detector)
        path = Path(tmp) / "standin-detector.pt"
        sha256 = save_standin(standin, path)
        log.note(f"STAND-IN detector, not inception-2015-12-05.pt: random weights, {flops_per_image(standin) / 1e9:.2f} "
                 f"GFLOPs an image (resized to {standin.resize} inside), {sizes.detector['features']} features, "
                 f"TorchScript, loaded through fm_core.fid.load_detector (sha256 checked)")  # fmt: skip
        start = time.perf_counter()
        detector = load_detector(path, sha256, device)
        load_seconds = time.perf_counter() - start
        images = random_images(sizes.detector_images)
        detector_features(detector, images[: sizes.fid_batch], device)  # warm-up
        reset_peak(device)
        synchronize(device)
        start = time.perf_counter()
        for chunk in batches(images, sizes.fid_batch):
            detector_features(detector, chunk, device)
        synchronize(device)
        seconds = time.perf_counter() - start
        log.unit("detector features", images=len(images), batch=sizes.fid_batch, seconds=seconds, images_s=len(images) / seconds,
                 load_s=load_seconds, peak_gib=peak_gib(device))  # fmt: skip

        root = write_fake_cifar(Path(tmp) / "data", sizes.fid_reference)
        evaluation = {"samples": 8, "likelihood_points": 0, "reference_tol": None, "batch_size": sizes.eval_batch,
                      "likelihood": {"solver": "euler", "nfe": 2},
                      "fid": {"detector": str(path), "detector_sha256": sha256, "samples": sizes.fid_samples,
                              "reference": {"split": "train"}, "batch_size": sizes.fid_batch}}  # fmt: skip
        config = sweep_config(sizes.unet, sizes.batch, 1, root, "fp32", False, device == "cuda", 1, evaluation)
        state = fmx_runner(config, device).state
        meter = FidMeter(state, Path(tmp) / "fid-reference")
        reset_peak(device)
        start = time.perf_counter()
        reference = meter.reference()
        synchronize(device)
        seconds = time.perf_counter() - start
        log.unit("reference statistics (train split, fmx's FidMeter)", images=reference.count, seconds=seconds,
                 images_s=reference.count / seconds, peak_gib=peak_gib(device))  # fmt: skip

        setting = SolverSetting("midpoint", nfe_budget=sizes.fid_nfe)
        model = state.evaluated_model.eval()
        reset_peak(device)
        start = time.perf_counter()
        row = meter.measure(setting, lambda scale, labels: state.objective.vector_field(model))
        synchronize(device)
        seconds = time.perf_counter() - start
        log.unit(f"whole protocol: midpoint NFE {sizes.fid_nfe} -> quantize -> features -> FID", samples=sizes.fid_samples,
                 unet_m_params=unet_size(sizes.unet)[0], eval_batch=sizes.eval_batch, seconds=seconds,
                 images_s=sizes.fid_samples / seconds, s_per_50k=FID_SAMPLES / (sizes.fid_samples / seconds),
                 fid_finite=bool(row["fid"] == row["fid"]), peak_gib=peak_gib(device))  # fmt: skip
        start = time.perf_counter()
        frechet(reference, reference)
        log.unit(f"Frechet distance alone ({len(reference.mu)} features, scipy sqrtm on the CPU)", seconds=time.perf_counter() - start)


# --------------------------------------------------------------------------------------------
# (e) `fmx train` + `fmx eval` without Ray
# --------------------------------------------------------------------------------------------


def _fmx_cli(args: list[str], cwd: Path, timeout: float, threads: int | None) -> tuple[subprocess.CompletedProcess[str], float]:
    """`python -m orchestrator.cli ARGS` (`threads`: PyTorch's CPU threads there); its output and wall seconds."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=max(1.0, timeout), check=False, env=env)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"fmx {args[0]} exited with {done.returncode}: {done.stderr.strip()[-1500:]}")
    return done, time.perf_counter() - start


def local_run(log: PartLog, sizes: Sizes, device: str) -> None:
    gpu = device == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        root = write_fake_cifar(folder / "data", 5 * max(sizes.local_batch, 64))
        evaluation = {"samples": sizes.local_samples, "likelihood_points": sizes.local_points, "reference_tol": None}
        sweep = sweep_config(sizes.local_unet, sizes.local_batch, sizes.local_steps, root, "fp32", False, gpu, 1, evaluation)
        sweep["name"] = "gpu_check_local"
        (folder / "sweep.yaml").write_text(json.dumps(sweep))  # JSON is YAML
        log.note(f"`python -m orchestrator.cli train|eval` subprocesses, train.use_gpu: {str(gpu).lower()}; U-Net "
                 f"{unet_size(sizes.local_unet)[0]:.2f}M parameters, batch {sizes.local_batch}, "
                 f"{sizes.local_samples} samples, {sizes.local_points} likelihood points")  # fmt: skip
        done, wall = _fmx_cli(["train", "sweep.yaml", "--out", "ckpt"], folder, log.left(), sizes.threads)
        saved = re.search(r"saved (\S+) \((\d+) steps, ([\d.]+) s on (.+)\)", done.stdout)
        if saved is None:
            raise RuntimeError(f"fmx train printed no 'saved' line: {done.stdout[-500:]}")
        checkpoint, trained, train_s, on = saved.group(1), int(saved.group(2)), float(saved.group(3)), saved.group(4)
        if gpu and on == "cpu":
            raise RuntimeError("fmx train trained on the CPU although train.use_gpu is true")
        log.unit("fmx train", device=on, steps=trained, train_s=train_s, steps_s=trained / train_s, wall_s=wall)
        done, wall = _fmx_cli(["eval", checkpoint], folder, log.left(), sizes.threads)
        row = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
        row = {k.strip(): v.strip() for k, v in row.items()}
        if row.get("status") != "ok":
            raise RuntimeError(f"fmx eval row status {row.get('status')!r}: {row.get('error')}")
        log.unit("fmx eval (dopri5 tol 1e-5, its default)", nfe=int(row["nfe"]), nll_bits_dim=float(row["nll"]),
                 eval_s=float(row["eval_seconds"]), wall_s=wall)  # fmt: skip


#: key -> (name, title, function): the report's order.
PARTS: dict[str, tuple[str, str, Callable[[PartLog, Sizes, str], None]]] = {
    "a": ("training", "Training throughput: bare PyTorch loop vs fmx's loop (fp32, bf16, eager, compiled)", training),
    "b": ("sampling", "dopri5 sampling at tol 1e-5 (NFE, images/s)", sampling),
    "c": ("likelihood", "Hutchinson bits/dim (fm_core.likelihood)", likelihood),
    "d": ("fid", "FID: detector features and the whole protocol, on a random-weight stand-in detector", fid),
    "e": ("local_run", "`fmx train` + `fmx eval` without Ray", local_run),
}


def run_part(key: str, sizes: Sizes, device: str, result: Path, t0: float, deadline: float) -> None:
    """One part in this process: every unit and any error go to `result`; the process exits 0 either way."""
    name, _, function = PARTS[key]
    log = PartLog(key, name, result, t0, deadline)
    if sizes.threads:
        torch.set_num_threads(sizes.threads)
    log.say(f"start ({log.left():.0f} s allowed)")
    try:
        function(log, sizes, device)
    except Exception as err:  # noqa: BLE001 - a failing part is recorded, the others still run
        log.data["error"] = f"{type(err).__name__}: {err}"[:2000]
        log.data["traceback"] = traceback.format_exc()[-4000:]
        log.say(f"FAILED: {log.data['error'][:300]}")
    log.data["finished"] = True
    log.data["ray_or_mlflow_loaded"] = sorted({m.split(".")[0] for m in sys.modules} & {"ray", "mlflow"})
    log.write()


def sizes_json(sizes: Sizes) -> str:
    return json.dumps(asdict(sizes))


def sizes_from_json(text: str) -> Sizes:
    return Sizes(**json.loads(text))
