"""Evaluating a `ModelState` at its current step under solver settings: one row per setting (NFE, likelihood,
sample metric, FID where asked, error against a reference solve), the samples drawn, and the reference
trajectory of 2-D data.

Every setting integrates from the same noise (and, for a class-conditional model, the same balanced labels);
the reference solve is one per guidance scale; large evaluations run in chunks of eval.batch_size points.
Each sample solve also integrates its samples' kinetic energy (fm_core.sampling: no extra evaluation, the same
steps), which gives the rows' straightness and path energy; eval.per_sample_nfe solves that many samples once
more one by one (fm_core.per_sample) for their own NFE.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fm_core.dataset_specs import DATASET_SPECS
from fm_core.guidance import guided, sampling_labels
from fm_core.image_data import ImageDataset
from fm_core.likelihood import LikelihoodResult, auto_divergence, bits_per_dim_from_draws, log_likelihood, uniform_dequantize
from fm_core.metrics import ode_solution_error
from fm_core.path_measures import PathMeasures, path_measures
from fm_core.per_sample import solve_each
from fm_core.sample_metrics import sample_metric
from fm_core.sampling import sample
from fm_core.solvers import SolverSetting
from orchestrator.fid_evaluation import FidMeter
from orchestrator.folders import fid_reference_cache
from orchestrator.model_state import ModelState
from orchestrator.records import trial_identity
from fm_core.likelihood import PER_SAMPLE_SOLVER, SHARED
from orchestrator.rows import EvalRow

TRAJECTORY_POINTS = 6  # states kept along the reference solve of 2-D data (t = 0, 0.2, ..., 1)

Field = Callable[[Tensor, Tensor], Tensor]


def solve_chunks(solve: Callable[[Tensor, slice], Any], inputs: Tensor, batch_size: int | None) -> tuple[list[Any], int]:
    """Run `solve(chunk, rows)` on chunks of at most `batch_size` points (bounding GPU memory on big
    evaluations; `rows` says which, so that each point keeps its class label); returns the chunks' results
    and the NFE of one solve (the mean over chunks, rounded)."""
    size = batch_size or len(inputs)
    results = [solve(inputs[i : i + size], slice(i, i + size)) for i in range(0, len(inputs), size)]
    return results, round(sum(r.nfe for r in results) / len(results))


def solve_in_batches(
    solve: Callable[[Tensor, slice], Any], inputs: Tensor, batch_size: int | None, value: Callable[[Any], Tensor] = lambda r: r.x
) -> tuple[Tensor, int]:
    """`solve_chunks`, with each chunk's `value` concatenated."""
    results, nfe = solve_chunks(solve, inputs, batch_size)
    return torch.cat([value(r) for r in results]), nfe


class Evaluator:
    """Evaluates a `ModelState` (the state keeps the rows of the training's own evaluations and their seconds).

    `fid_cache`: where FID reference statistics are kept (a trial: the sweep's storage, `TrialSetup.fid_cache`;
    else this machine's cache); used only with eval.fid."""

    def __init__(self, state: ModelState, fid_cache: Path | None = None) -> None:
        self.state = state
        # (times, states of shape (T, N, 2)) of the last evaluation's reference solve; 2-D data only.
        self.trajectory: tuple[list[float], Tensor] | None = None
        # The data's own samples the last evaluation's sample metric compared with: the figures' data panel.
        self.data: Tensor | None = None
        cache = fid_cache if fid_cache is not None else fid_reference_cache(None)
        self.fid = FidMeter(state, cache) if state.config.eval.fid is not None else None

    def evaluate(
        self, settings: list[SolverSetting], on_row: Callable[[int, EvalRow], None] | None = None
    ) -> tuple[list[EvalRow], dict[str, Tensor]]:
        """Rows for every setting at the current step, and the samples drawn (by setting label).

        `on_row(i, row)` is called as each setting finishes: long evaluations report progress through it."""
        start = time.perf_counter()
        try:
            return self._evaluate(settings, on_row)
        finally:
            self.state.eval_seconds += time.perf_counter() - start

    def _evaluate(
        self, settings: list[SolverSetting], on_row: Callable[[int, EvalRow], None] | None
    ) -> tuple[list[EvalRow], dict[str, Tensor]]:
        state, cfg = self.state, self.state.config.eval
        draw = _Draw(state)
        reference_data = state.dataset.reference(cfg.samples, seed=cfg.seed)
        draw.reference(settings[0].cfg_scale if settings else None)  # before any setting: as it always was
        metric_name = DATASET_SPECS[state.dataset.name].sample_metric  # what the dataset says it is judged by
        likelihood = _Likelihood(state, draw.unconditional, draw.is_image)
        shared = cfg.likelihood.setting()
        shared_nll = likelihood.measure(shared, SHARED) if shared is not None else None  # once per checkpoint
        identity = trial_identity(state.config, state.key)

        rows: list[EvalRow] = []
        samples: dict[str, Tensor] = {}
        for index, setting in enumerate(settings):
            start = time.perf_counter()
            try:
                with torch.no_grad(), state.sampling_precision.autocast():
                    x, nfe, paths = draw.solve(setting)
                    per_sample = draw.per_sample(setting, x)
                x = x.float().detach().cpu()
                if not bool(torch.isfinite(x).all()):
                    raise FloatingPointError("the ODE solution has non-finite values")
                samples[setting.label] = x
                metric = math.nan if metric_name is None else sample_metric(metric_name, x, reference_data)
                fid = self.fid.measure(setting, draw.labelled_field) if self.fid is not None else {}
                nll = shared_nll if shared_nll is not None else likelihood.measure(setting, PER_SAMPLE_SOLVER)
                reference = draw.reference(setting.cfg_scale)
                error = math.nan if reference is None else ode_solution_error(x, reference)
                seconds = time.perf_counter() - start
                for draws, value in nll.values:  # one row per dequantization K (a single row for vectors)
                    rows.append(
                        EvalRow.of(
                            setting, state.step, **identity, nfe=nfe, nll=value, dequant_draws=draws, **nll.protocol,
                            sample_metric=metric, sample_metric_name=metric_name, ode_error=error, eval_seconds=seconds,
                            error=nll.error, straightness=float(paths.straightness.mean()),
                            path_energy=float(paths.path_energy.mean()), **per_sample, **fid,
                        )
                    )  # fmt: skip
            except Exception as err:  # one bad setting must not lose the others
                reason = f"{type(err).__name__}: {err}".splitlines()[0]
                seconds = time.perf_counter() - start
                rows.append(EvalRow.of(setting, state.step, **identity, status="failed", error=reason, eval_seconds=seconds))
            if on_row is not None:
                on_row(index, rows[-1])
        self.trajectory = draw.trajectory
        self.data = reference_data
        return rows, samples


class _Draw:
    """What every setting of one evaluation shares: the noise, the field it integrates (one per guidance scale
    for a class-conditional model, with balanced, fixed labels like the noise) and the reference solves."""

    def __init__(self, state: ModelState) -> None:
        cfg = state.config.eval
        self.state = state
        self.model = state.evaluated_model
        self.model.eval()
        # A class-conditional model's likelihood is the unconditional model's (the null label): this field.
        self.unconditional: Field = state.objective.vector_field(self.model)
        self.t_span = (0.0, state.path.t_max)
        g = torch.Generator().manual_seed(cfg.seed)
        noise = torch.randn((cfg.samples, *state.dataset.shape), generator=g) * state.path.prior_std
        self.noise = noise.to(state.device)
        self.is_image = isinstance(state.dataset, ImageDataset)
        self.labels = sampling_labels(len(noise), state.num_classes, state.device) if state.num_classes else None
        self.references: dict[float | None, Tensor | None] = {}
        self.trajectory: tuple[list[float], Tensor] | None = None

    def field(self, scale: float | None, rows: slice) -> Field:
        return self.labelled_field(scale, None if self.labels is None else self.labels[rows])

    def labelled_field(self, scale: float | None, labels: Tensor | None) -> Field:
        """The field at guidance `scale` for samples of these classes (None: an unconditional model)."""
        if scale is None or labels is None:
            return self.unconditional
        return self.state.objective.vector_field(guided(self.model, labels, scale, self.state.num_classes))

    def solve(self, setting: SolverSetting) -> tuple[Tensor, int, PathMeasures]:
        """The samples, the NFE and each sample's straightness and path energy (from the same solve)."""
        results, nfe = solve_chunks(
            lambda chunk, rows: sample(self.field(setting.cfg_scale, rows), chunk, setting, self.t_span, energy=True),
            self.noise, self.state.config.eval.batch_size,
        )  # fmt: skip
        x = torch.cat([r.x for r in results])
        energy = torch.cat([r.energy for r in results])
        return x, nfe, path_measures(self.noise, x, energy, self.t_span[1] - self.t_span[0])

    def per_sample(self, setting: SolverSetting, batched: Tensor) -> dict[str, float]:
        """eval.per_sample_nfe's row values for an adaptive setting: the first N samples each solved alone,
        their NFE's mean, median and 90th percentile, and the largest |difference| from the batch's samples."""
        count = self.state.config.eval.per_sample_nfe
        if count is None or not setting.is_adaptive:
            return {}
        solved = solve_each(lambda i: self.field(setting.cfg_scale, slice(i, i + 1)), self.noise[:count], setting, self.t_span)
        nfe = solved.summary()
        gap = float((solved.x.float() - batched[:count].float()).abs().max())
        return {"nfe_sample_mean": nfe["mean"], "nfe_sample_median": nfe["median"], "nfe_sample_p90": nfe["p90"],
                "per_sample_gap": gap}  # fmt: skip

    def reference(self, scale: float | None) -> Tensor | None:
        """The reference solve of the field a setting integrates (one per guidance scale)."""
        if scale not in self.references:
            self.references[scale] = self._reference_solve(scale)
        return self.references[scale]

    def _reference_solve(self, scale: float | None) -> Tensor | None:
        """The dopri5 solve at eval.reference_tol from the same noise that ode_error is measured against; for
        2-D data it also keeps a few intermediate states (the density-over-t plot) in self.trajectory."""
        self.trajectory = None
        tol = self.state.config.eval.reference_tol
        if tol is None:
            return None
        times, (t0, t1) = None, self.t_span
        if self.state.dataset.dim == 2 and not self.is_image:
            times = [t0 + (t1 - t0) * i / (TRAJECTORY_POINTS - 1) for i in range(TRAJECTORY_POINTS)]
            times[-1] = t1
        reference = SolverSetting.adaptive("dopri5", tol)
        with torch.no_grad():
            states, _ = solve_in_batches(
                lambda chunk, rows: sample(self.field(scale, rows), chunk, reference, self.t_span, times),
                self.noise,
                self.state.config.eval.batch_size,
                lambda sol: sol.x.unsqueeze(1) if sol.trajectory is None else sol.trajectory.transpose(0, 1),
            )
        self.trajectory = None if times is None else (times, states.transpose(0, 1).detach().cpu())
        return states[:, -1].cpu()


@dataclass
class Likelihoods:
    """A checkpoint's mean NLL of held-out data (one value per dequantization K) and how it was measured."""

    values: list[tuple[int | None, float]]
    protocol: dict[str, Any]
    error: str | None = None


class _Likelihood:
    """Integrates the log-likelihood of held-out data under one solver setting: nats for vectors, bits/dim for
    8-bit images (every K from the same max(K) dequantized draws, in one batched solve)."""

    def __init__(self, state: ModelState, field_fn: Field, is_image: bool) -> None:
        self.state, self.field_fn, self.is_image = state, field_fn, is_image
        cfg = state.config.eval
        self.divergence = cfg.divergence if cfg.divergence != "auto" else auto_divergence(state.dataset.dim)

    def measure(self, setting: SolverSetting, protocol: str) -> Likelihoods:
        cfg = self.state.config.eval
        draws: list[int | None] = list(cfg.dequant_draws) if self.is_image else [None]
        if cfg.likelihood_points == 0:
            return Likelihoods([(None, math.nan)], {})
        meta = {
            "nll_unit": "bits/dim" if self.is_image else "nats", "nll_protocol": protocol, "nll_solver": setting.label,
            "nll_divergence": self.divergence, "nll_probe": cfg.probe if self.divergence == "hutchinson" else None,
            "nll_points": cfg.likelihood_points,
        }  # fmt: skip
        try:
            values, nfe = self._integrate(setting)
        except Exception as err:  # the samples' rows stand without it; say why it is missing
            reason = f"likelihood: {type(err).__name__}: {err}".splitlines()[0]
            return Likelihoods([(k, math.nan) for k in draws], meta, reason)
        return Likelihoods(values, {**meta, "nll_nfe": nfe})

    def _integrate(self, setting: SolverSetting) -> tuple[list[tuple[int | None, float]], int]:
        state, cfg = self.state, self.state.config.eval
        g = torch.Generator().manual_seed(cfg.seed + 1)

        def one(chunk: Tensor, rows: slice) -> LikelihoodResult:
            return log_likelihood(
                self.field_fn, chunk.to(state.device), setting, t1=state.path.t_max, prior_std=state.path.prior_std,
                divergence=self.divergence, probe=cfg.probe, generator=g,
            )  # fmt: skip

        if self.is_image:
            dataset = state.dataset
            assert isinstance(dataset, ImageDataset)
            images = dataset.images_heldout_uint8[dataset.reference_indices(cfg.likelihood_points, cfg.seed)]
            k_max = max(cfg.dequant_draws)
            # All K dequantized copies go through one batched solve: K solves' worth of work at one solve's NFE.
            copies = torch.cat([uniform_dequantize(images, g) for _ in range(k_max)])
            flat, nfe = solve_in_batches(one, copies, cfg.batch_size, lambda r: r.log_prob)
            draws = flat.detach().cpu().reshape(k_max, len(images))
            return [(k, float(bits_per_dim_from_draws(draws[:k], dataset.dim).mean())) for k in cfg.dequant_draws], nfe
        points = state.dataset.reference(cfg.likelihood_points, seed=cfg.seed + 1)
        values, nfe = solve_in_batches(one, points, cfg.batch_size, lambda r: r.log_prob)
        values = values.detach().cpu()
        if not bool(torch.isfinite(values).all()):
            raise FloatingPointError("non-finite log-likelihoods")
        return [(None, float(-values.mean()))], nfe
