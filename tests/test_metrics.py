"""Tests for fm_core.metrics and fm_core.feature_metrics: raw-coordinate distances, Frechet distances, the digits classifier (FID: tests/test_fid.py)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from fm_core.feature_metrics import (
    DigitsFeatureNet,
    classifier_accuracy,
    classifier_frechet_distance,
    digits_classifier,
)
from fm_core.image_data import DigitsDataset
from fm_core.metrics import energy_distance, feature_stats, frechet_distance, ode_solution_error, sliced_wasserstein


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Sliced Wasserstein and energy distance
# --------------------------------------------------------------------------------------------


def test_sliced_wasserstein_same_vs_shifted() -> None:
    x = torch.randn(4000, 2, generator=_gen(0))
    y = torch.randn(4000, 2, generator=_gen(1))
    same = sliced_wasserstein(x, y)
    assert 0 <= same < 0.05
    shifts = [0.25, 0.5, 1.0, 2.0]
    values = [sliced_wasserstein(x, y + torch.tensor([s, 0.0])) for s in shifts]
    assert values[0] > 3 * same
    assert all(a < b for a, b in zip(values, values[1:]))
    # A pure translation s of the *same* sample gives SW_2 = sqrt(E (theta . s)^2) ~ |s| / sqrt(2) in 2D.
    assert sliced_wasserstein(x, x + torch.tensor([2.0, 0.0])) == pytest.approx(2 / math.sqrt(2), rel=0.1)
    assert sliced_wasserstein(x, x) == 0.0


def test_sliced_wasserstein_unequal_sizes_images_and_seed() -> None:
    x = torch.randn(1000, 1, 4, 4, generator=_gen(0))
    y = torch.randn(3000, 1, 4, 4, generator=_gen(1))
    same = sliced_wasserstein(x, y)
    shifted = sliced_wasserstein(x, y + 1.0)
    assert same < 0.1 < shifted
    # For a translation by the all-ones vector in 16 dims, SW_2 ~ sqrt(E (theta . 1)^2) = 1.
    assert shifted == pytest.approx(1.0, rel=0.15)
    assert sliced_wasserstein(x, y, seed=3) == sliced_wasserstein(x, y, seed=3)
    assert sliced_wasserstein(x, y, p=1) != sliced_wasserstein(x, y, p=2)
    with pytest.raises(ValueError):
        sliced_wasserstein(x, torch.randn(10, 5))


def test_energy_distance_same_vs_shifted() -> None:
    x = torch.randn(2000, 2, generator=_gen(0))
    y = torch.randn(2000, 2, generator=_gen(1))
    same = energy_distance(x, y)
    assert 0 <= same < 0.01
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    values = [energy_distance(x, y + torch.tensor([s, 0.0])) for s in (0.25, 0.5, 1.0, 2.0)]
    assert values[0] > 5 * same
    assert all(a < b for a, b in zip(values, values[1:]))
    # Unequal sizes and image shapes are accepted.
    assert energy_distance(torch.randn(300, 1, 2, 2), torch.randn(500, 1, 2, 2)) >= 0


# --------------------------------------------------------------------------------------------
# Frechet distance
# --------------------------------------------------------------------------------------------


def test_feature_stats_float64_and_matches_numpy() -> None:
    f = torch.randn(500, 6, generator=_gen(0))
    mu, cov = feature_stats(f)
    assert mu.dtype == np.float64 and cov.dtype == np.float64
    assert mu.shape == (6,) and cov.shape == (6, 6)
    np.testing.assert_allclose(cov, np.cov(f.double().numpy(), rowvar=False), rtol=1e-10)
    with pytest.raises(ValueError):
        feature_stats(torch.randn(1, 6))


def test_frechet_identical_and_diagonal_closed_form() -> None:
    rng = np.random.RandomState(0)
    a = rng.randn(200, 5)
    cov = a.T @ a / 200
    mu = rng.randn(5)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8)
    # Diagonal Gaussians: ||mu1 - mu2||^2 + sum_i (s1_i - s2_i)^2.
    s1, s2 = np.array([0.5, 1.0, 2.0]), np.array([1.5, 1.0, 0.2])
    m1, m2 = np.array([0.0, 1.0, -1.0]), np.array([1.0, 1.0, 2.0])
    expected = np.sum((m1 - m2) ** 2) + np.sum((s1 - s2) ** 2)
    got = frechet_distance(m1, np.diag(s1**2), m2, np.diag(s2**2))
    assert got == pytest.approx(expected, rel=1e-8)
    # Tensors are accepted too, and the distance is symmetric.
    c1, c2 = torch.tensor(np.diag(s1**2)), torch.tensor(np.diag(s2**2))
    got_t = frechet_distance(torch.tensor(m2), c2, torch.tensor(m1), c1)
    assert got_t == pytest.approx(expected, rel=1e-8)
    with pytest.raises(ValueError):
        frechet_distance(m1, np.eye(3), m2[:2], np.eye(2))


def test_frechet_rank_deficient_is_finite() -> None:
    # Fewer samples than dimensions: singular covariances must still give a finite distance.
    f = torch.randn(5, 20, generator=_gen(0))
    mu, cov = feature_stats(f)
    assert np.linalg.matrix_rank(cov) < 20
    d_same = frechet_distance(mu, cov, mu, cov)
    d_shift = frechet_distance(mu, cov, mu + 1.0, cov)
    assert math.isfinite(d_same) and d_same < 1e-3
    assert d_shift == pytest.approx(20.0, abs=1e-2)


# --------------------------------------------------------------------------------------------
# Digits classifier
# --------------------------------------------------------------------------------------------


@dataclass
class TrainedClassifier:
    model: DigitsFeatureNet
    cache_dir: Path
    seconds: float
    rng_preserved: bool
    threads_preserved: bool


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedClassifier:
    cache_dir = tmp_path_factory.mktemp("fmx_cache")
    rng_before = torch.get_rng_state()
    threads_before = torch.get_num_threads()
    start = time.perf_counter()
    model = digits_classifier(cache_dir=cache_dir)
    seconds = time.perf_counter() - start
    return TrainedClassifier(
        model=model,
        cache_dir=cache_dir,
        seconds=seconds,
        rng_preserved=torch.equal(rng_before, torch.get_rng_state()),
        threads_preserved=threads_before == torch.get_num_threads(),
    )


@pytest.fixture(scope="module")
def digits() -> DigitsDataset:
    return DigitsDataset()


def test_digits_classifier_accuracy_and_side_effects(trained: TrainedClassifier) -> None:
    assert not trained.model.loaded_from_cache
    assert not trained.model.training
    acc = classifier_accuracy(trained.model)
    print(f"digits classifier: held-out accuracy {acc:.4f}, trained in {trained.seconds:.2f} s")
    assert acc >= 0.9
    assert trained.seconds < 30
    assert trained.rng_preserved and trained.threads_preserved
    # Exactly one cache file and no leftover temporary files.
    files = sorted(p.name for p in trained.cache_dir.iterdir())
    assert len(files) == 1 and files[0].endswith(".pt") and trained.model.cache_path is not None
    assert trained.model.cache_path.name == files[0]


def test_digits_classifier_cached_load_fast_and_identical(trained: TrainedClassifier, digits: DigitsDataset) -> None:
    start = time.perf_counter()
    again = digits_classifier(cache_dir=trained.cache_dir)
    seconds = time.perf_counter() - start
    assert again.loaded_from_cache
    assert seconds < 1.0 and seconds < trained.seconds
    x = digits.heldout_images()
    with torch.no_grad():
        f1, f2 = trained.model.features(x), again.features(x)
    assert f1.shape == (digits.num_heldout, 64)
    assert torch.equal(f1, f2)


def test_digits_classifier_independent_of_default_dtype(trained: TrainedClassifier, float64: None) -> None:
    model = digits_classifier(cache_dir=trained.cache_dir)
    assert torch.get_default_dtype() == torch.float64
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert classifier_accuracy(model) == classifier_accuracy(trained.model)


def test_digits_classifier_env_cache_dir_and_corrupt_entry(
    trained: TrainedClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FMX_CACHE_DIR is honoured; a corrupt entry is retrained (deterministically) and replaced.
    assert trained.model.cache_path is not None
    bad = tmp_path / trained.model.cache_path.name
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("FMX_CACHE_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match="unreadable"):
        model = digits_classifier()
    assert model.cache_path == bad and not model.loaded_from_cache
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), trained.model.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert digits_classifier().loaded_from_cache


def test_classifier_frechet_distance(trained: TrainedClassifier, digits: DigitsDataset) -> None:
    held, train = digits.heldout_images(), digits.train_images()
    noise = torch.randn(held.shape, generator=_gen(0)).clamp(-1, 1)
    d_data = classifier_frechet_distance(held, train, classifier=trained.model)
    d_noise = classifier_frechet_distance(noise, train, classifier=trained.model)
    assert d_data >= 0
    assert d_noise > 20 * d_data
    assert classifier_frechet_distance(train, train, classifier=trained.model) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        classifier_frechet_distance(torch.zeros(10, 3, 8, 8), train, classifier=trained.model)


# --------------------------------------------------------------------------------------------
# ODE solution error
# --------------------------------------------------------------------------------------------


def test_ode_solution_error() -> None:
    x = torch.randn(16, 1, 8, 8, generator=_gen(0))
    assert ode_solution_error(x, x) == 0.0
    assert ode_solution_error(x + 0.5, x) == pytest.approx(0.25, rel=1e-6)
    y = x.clone()
    y[0, 0, 0, 0] += 8.0  # one pixel off by 8 among 16 * 64
    assert ode_solution_error(y, x) == pytest.approx(64.0 / (16 * 64), rel=1e-6)
    with pytest.raises(ValueError):
        ode_solution_error(x, x[:8])
