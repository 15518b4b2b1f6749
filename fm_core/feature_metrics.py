"""The "classifier Frechet distance" for digits: a Frechet distance between Gaussian fits of the features of a
small classifier trained here in seconds (deterministically, cached on disk), with no downloaded weights.

FID, with the user's Inception detector, is fm_core.fid.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fm_core.cache import atomic_write, default_cache_dir
from fm_core.image_data import DigitsDataset
from fm_core.metrics import feature_stats, frechet_distance

#: Bump when the classifier's architecture or training code changes: it invalidates caches.
CLASSIFIER_VERSION = "1"

#: Everything that determines the trained classifier's weights (hashed into the cache key).
CLASSIFIER_CONFIG: dict[str, Any] = {
    "arch": "mlp-64-256-64-10",
    "epochs": 40,
    "batch_size": 128,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "seed": 0,
    "holdout_fraction": 0.2,
    "split_seed": 0,
}


def _stats_distance(a: Tensor, b: Tensor) -> float:
    mu1, c1 = feature_stats(a)
    mu2, c2 = feature_stats(b)
    return frechet_distance(mu1, c1, mu2, c2)


# --------------------------------------------------------------------------------------------
# Digits classifier ("classifier Frechet distance")
# --------------------------------------------------------------------------------------------


class DigitsFeatureNet(nn.Module):
    """A small MLP for 1x8x8 digits in [-1, 1]; ``features`` is its 64-d penultimate layer.

    An MLP (rather than a CNN) because it trains to ~97% held-out accuracy in about two
    seconds on one CPU thread, which keeps the cold cache cheap.
    """

    #: Set by :func:`digits_classifier`: where the weights are cached and whether they came from there.
    cache_path: Path | None = None
    loaded_from_cache: bool = False

    def __init__(self, hidden: int = 256, feature_dim: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            nn.Linear(64, hidden),
            nn.ReLU(),
            nn.Linear(hidden, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    @staticmethod
    def _flatten(x: Tensor) -> Tensor:
        if x.ndim < 2 or x[0].numel() != 64:
            raise ValueError(f"DigitsFeatureNet expects (N, 1, 8, 8) or (N, 64) inputs, got shape {tuple(x.shape)}")
        return x.reshape(x.shape[0], 64)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate (post-ReLU) embedding of shape (N, feature_dim)."""
        return self.body(self._flatten(x))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of shape (N, 10)."""
        return self.head(self.features(x))


def _cache_key() -> str:
    blob = json.dumps({"config": CLASSIFIER_CONFIG, "version": CLASSIFIER_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _float32_default() -> Iterator[None]:
    """The classifier is float32 whatever the caller's default dtype (its weights must not depend on it)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@contextlib.contextmanager
def _deterministic_section(seed: int) -> Iterator[None]:
    """Single thread, deterministic kernels, seeded global RNG -- all restored afterwards.

    One thread makes the float reductions' order (hence the weights) identical on every
    machine with the same torch build; the global RNG is forked so callers' streams are
    untouched by the weight initialisation.
    """
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]), _float32_default():
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(det)
            torch.set_num_threads(threads)


def _train_digits_classifier(data: DigitsDataset) -> DigitsFeatureNet:
    cfg = CLASSIFIER_CONFIG
    with _deterministic_section(int(cfg["seed"])):
        model = DigitsFeatureNet()
        x = data.train_images().reshape(-1, 64)
        y = data.labels_train
        assert y is not None
        opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        g = torch.Generator().manual_seed(int(cfg["seed"]))
        bs = int(cfg["batch_size"])
        model.train()
        for _ in range(int(cfg["epochs"])):
            perm = torch.randperm(x.shape[0], generator=g)
            for i in range(0, x.shape[0], bs):
                idx = perm[i : i + bs]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return model.eval()


def digits_classifier(cache_dir: str | Path | None = None) -> DigitsFeatureNet:
    """The trained digits classifier, loaded from cache or trained (deterministically) and cached.

    The cache file is keyed by a hash of ``CLASSIFIER_CONFIG`` and ``CLASSIFIER_VERSION``, lives
    in ``cache_dir`` (default ``$FMX_CACHE_DIR`` or ``~/.cache/fmx``) and is written atomically,
    so concurrent workers at worst train it twice.  An unreadable cache entry is retrained; an
    unwritable cache folder only costs a warning.  The returned model is in eval mode and has
    ``cache_path`` and ``loaded_from_cache`` attributes.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = folder / f"digits_classifier-{_cache_key()}.pt"
    # The throwaway init must not advance the caller's RNG.
    with torch.random.fork_rng(devices=[]), _float32_default():
        model = DigitsFeatureNet()
    loaded = False
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            loaded = True
        except Exception as exc:  # corrupt or incompatible entry: fall through and retrain
            warnings.warn(f"ignoring unreadable classifier cache '{path}': {exc}", stacklevel=2)
    if not loaded:
        data = DigitsDataset(
            holdout_fraction=CLASSIFIER_CONFIG["holdout_fraction"], split_seed=CLASSIFIER_CONFIG["split_seed"]
        )
        model = _train_digits_classifier(data)
        try:
            atomic_write(path, lambda f: torch.save(model.state_dict(), f))
        except OSError as exc:
            warnings.warn(f"could not write classifier cache '{path}': {exc}", stacklevel=2)
    model.eval()
    model.cache_path = path
    model.loaded_from_cache = loaded
    return model


@torch.no_grad()
def _batched(fn: Any, x: Tensor, batch_size: int) -> Tensor:
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def classifier_accuracy(model: DigitsFeatureNet, dataset: DigitsDataset | None = None) -> float:
    """Top-1 accuracy on the digits held-out split (the classifier's own split by default)."""
    if dataset is None:
        dataset = DigitsDataset(
            holdout_fraction=CLASSIFIER_CONFIG["holdout_fraction"], split_seed=CLASSIFIER_CONFIG["split_seed"]
        )
    assert dataset.labels_heldout is not None
    was_training = model.training
    model.eval()
    logits = _batched(model, dataset.heldout_images(), 1024)
    model.train(was_training)
    return float((logits.argmax(dim=1) == dataset.labels_heldout).double().mean())


def classifier_frechet_distance(
    samples: Tensor, reference: Tensor, classifier: DigitsFeatureNet | None = None
) -> float:
    """Frechet distance between digits-classifier features of samples and reference images.

    Inputs are (N, 1, 8, 8) floats in [-1, 1]; samples are clipped to that range first, as an
    8-bit rendering of them would be.  ``classifier=None`` uses :func:`digits_classifier`.
    """
    model = classifier if classifier is not None else digits_classifier()
    was_training = model.training
    model.eval()
    fs = _batched(model.features, samples.detach().cpu().float().clamp(-1, 1), 1024)
    fr = _batched(model.features, reference.detach().cpu().float().clamp(-1, 1), 1024)
    model.train(was_training)
    return _stats_distance(fs, fr)
