"""FID of a checkpoint under one solver setting (eval.fid), by fm_core.fid's protocol: `fid.samples` images drawn
with the setting from noise of their own, `eval.batch_size` at a time through the ODE, quantized, their features
accumulated `fid.batch_size` images per detector call; against reference statistics computed once per content
(dataset split, detector) and cached where the evaluation is told (the sweep's storage), or read from a file.

The noise comes in blocks of NOISE_BLOCK from seeds of their own, so the images drawn do not depend on how many
go through the solver at once; for a class-conditional model their classes are balanced and fixed, as in the
evaluation's other draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fm_core.fid import (
    FID_PROTOCOL, FeatureMoments, batches, cached_reference, detector_features, detector_file, fid, image_stats,
    load_detector, quantize, reference_key, split_images,
)  # fmt: skip
from fm_core.fid_files import FidStats, read_stats
from fm_core.guidance import sampling_labels
from fm_core.image_data import ImageDataset
from fm_core.sampling import sample
from fm_core.solvers import SolverSetting
from orchestrator.model_state import ModelState

#: Samples per block of FID noise (each block from its own seed).
NOISE_BLOCK = 1000
#: Mixed with eval.seed into each block's seed: apart from the evaluation's noise (seed) and likelihood (seed + 1).
_NOISE_STREAM = 2

#: The field to integrate for a guidance scale and these samples' class labels (None: unconditional model).
FieldFor = Callable[[float | None, Tensor | None], Callable[[Tensor, Tensor], Tensor]]


class FidMeter:
    """One evaluator's FID: the detector and the reference statistics, each loaded once, then a value per setting.

    `reference_cached` says, once the reference is known, whether it was read from the cache (True), computed
    and written there (False), or read from the sweep's statistics file (None)."""

    def __init__(self, state: ModelState, cache: Path) -> None:
        fid_config = state.config.eval.fid
        assert fid_config is not None and fid_config.detector_sha256 is not None  # validation records the sha256
        self.state, self.config, self.cache = state, fid_config, cache
        self.sha256: str = fid_config.detector_sha256
        self._detector: torch.jit.ScriptModule | None = None
        self._reference: FidStats | None = None
        self.reference_cached: bool | None = None

    @property
    def detector(self) -> torch.jit.ScriptModule:
        """Loaded at first use, from bytes that must have the sha256 validation recorded."""
        if self._detector is None:
            path = detector_file(self.config.detector, self.sha256)
            self._detector = load_detector(path, self.sha256, self.state.device)
        return self._detector

    def reference(self) -> FidStats:
        if self._reference is None:
            self._reference, self.reference_cached = self._load_reference()
        return self._reference

    def _load_reference(self) -> tuple[FidStats, bool | None]:
        source = self.config.reference
        if source.stats is not None:
            return read_stats(Path(source.stats))[0], None
        dataset = self.state.dataset
        assert isinstance(dataset, ImageDataset) and source.split is not None  # validation: image datasets only
        images = split_images(dataset, source.split)

        def compute() -> FidStats:
            return image_stats(self.detector, batches(images, self.config.batch_size), self.state.device)

        return cached_reference(self.cache, reference_key(images, self.sha256), compute)

    def measure(self, setting: SolverSetting, field_for: FieldFor) -> dict[str, Any]:
        """The row's FID and how it was measured (EvalRow's fid_* fields)."""
        state, cfg = self.state, self.config
        reference = self.reference()  # first: a reference that cannot be had fails before any sampling
        moments = FeatureMoments()
        labels = sampling_labels(cfg.samples, state.num_classes, state.device) if state.num_classes else None
        for rows, noise in self._noise():
            field = field_for(setting.cfg_scale, None if labels is None else labels[rows])
            with torch.no_grad(), state.sampling_precision.autocast():
                x = sample(field, noise.to(state.device), setting, (0.0, state.path.t_max)).x
            if not bool(torch.isfinite(x).all()):
                raise FloatingPointError("an FID sample has non-finite values")
            for images in batches(quantize(x), cfg.batch_size):
                moments.add(detector_features(self.detector, images, state.device))
        source = cfg.reference
        return {
            "fid": fid(moments.stats(), reference), "fid_samples": cfg.samples, "fid_protocol": FID_PROTOCOL,
            "fid_reference": source.split if source.stats is None else Path(source.stats).name,
            "fid_reference_digest": reference.digest, "fid_detector_sha256": self.sha256,
        }  # fmt: skip

    def _noise(self) -> Iterator[tuple[slice, Tensor]]:
        """(rows, noise) of at most eval.batch_size samples (all at once where unset), block by block."""
        state, total = self.state, self.config.samples
        size = state.config.eval.batch_size or total
        held, start = torch.empty((0, *state.dataset.shape)), 0
        for first in range(0, total, NOISE_BLOCK):
            seed = int(np.random.SeedSequence([state.config.eval.seed, _NOISE_STREAM, first]).generate_state(1)[0])
            block = torch.randn((min(NOISE_BLOCK, total - first), *state.dataset.shape), generator=torch.Generator().manual_seed(seed))
            held = torch.cat([held, block * state.path.prior_std])
            last = first + NOISE_BLOCK >= total
            while len(held) >= size or (last and len(held)):
                chunk, held = held[:size], held[size:]
                yield slice(start, start + len(chunk)), chunk
                start += len(chunk)
