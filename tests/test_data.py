"""Tests for fm_core.data, fm_core.image_data and fm_core.datasets: shapes, reproducibility, exact densities and local-file loaders."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from fm_core.data import Dataset, from_uint8, to_uint8
from fm_core.datasets import make_dataset
from fm_core.image_data import Cifar10Dataset, DigitsDataset
from fm_core.names import DATASET_NAMES
from tests.bad_inputs import CodeRunningPickle

SYNTHETIC = ("checkerboard", "8gaussians", "moons")
GMM_OPTIONS = {"means": [[-1.0, 0.5], [2.0, -1.0]], "stds": [0.5, [1.0, 0.3]], "weights": [1.0, 3.0]}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def digits() -> DigitsDataset:
    return DigitsDataset()


@pytest.mark.parametrize("name", [*SYNTHETIC, "gmm"])
def test_synthetic_shape_and_reproducibility(name: str) -> None:
    ds = make_dataset(name, **(GMM_OPTIONS if name == "gmm" else {}))
    assert isinstance(ds, Dataset) and ds.name == name
    assert ds.shape == (2,) and ds.dim == 2 and not ds.is_image
    a = ds.sample(500, generator=_gen(1))
    b = ds.sample(500, generator=_gen(1))
    c = ds.sample(500, generator=_gen(2))
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    ref = ds.reference(300)
    assert ref.shape == (300, 2)
    assert torch.equal(ref, ds.reference(300))
    assert not torch.equal(ref, ds.reference(300, seed=1))
    # The reference stream is not the training stream of a small seed.
    assert not torch.equal(ref, ds.sample(300, generator=_gen(0)))
    assert ds.sample(0).shape == (0, 2)


def test_checkerboard_points_in_filled_squares_only() -> None:
    ds = make_dataset("checkerboard")
    x = ds.sample(20_000, generator=_gen(0)).double()
    assert (x.abs() <= 4).all()
    col = torch.floor((x[:, 0] + 4) / 2)
    row = torch.floor((x[:, 1] + 4) / 2)
    assert ((col + row) % 2 == 0).all()
    # All eight filled squares are populated, roughly equally.
    counts = torch.bincount((col * 4 + row).long(), minlength=16).double()
    filled = counts[counts > 0]
    assert filled.numel() == 8
    assert (filled / filled.sum() - 1 / 8).abs().max() < 0.02
    # Density: 1/32 inside filled squares, zero in an empty one and outside the board.
    lp = ds.log_prob(torch.tensor([[-3.0, -3.0], [-1.0, -3.0], [5.0, 0.0]]))
    assert lp[0].item() == pytest.approx(-math.log(32.0))
    assert lp[1].item() == -math.inf and lp[2].item() == -math.inf


def test_eight_gaussians_options_and_density() -> None:
    ds = make_dataset("8gaussians", radius=3.0, std=0.1)
    x = ds.sample(4000, generator=_gen(0))
    r = x.double().norm(dim=1)
    assert (r - 3.0).abs().mean() < 0.15
    # Exact density is a GMM: at a centre it is ~ (1/8) N(0; 0, 0.01 I).
    peak = ds.log_prob(torch.tensor([[3.0, 0.0]]))
    assert peak.item() == pytest.approx(math.log(1 / 8) - math.log(2 * math.pi * 0.01), abs=1e-6)
    with pytest.raises(ValueError, match="std"):
        make_dataset("8gaussians", std=-1.0)


def test_moons_centred_and_unit_scale() -> None:
    ds = make_dataset("moons", noise=0.1)
    x = ds.sample(20_000, generator=_gen(0)).double()
    assert x.mean(dim=0).abs().max() < 0.05
    assert x.var(dim=0).mean().item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(NotImplementedError):
        ds.log_prob(x[:3])
    with pytest.raises(ValueError, match="noise"):
        make_dataset("moons", noise=-0.1)


def test_gmm_log_prob_matches_scipy() -> None:
    ds = make_dataset("gmm", **GMM_OPTIONS)
    w = np.array([0.25, 0.75])
    comps = [
        multivariate_normal(mean=[-1.0, 0.5], cov=np.diag([0.25, 0.25])),
        multivariate_normal(mean=[2.0, -1.0], cov=np.diag([1.0, 0.09])),
    ]
    x = torch.randn(200, 2, generator=_gen(3), dtype=torch.float64) * 2
    expected = np.log(sum(wk * c.pdf(x.numpy()) for wk, c in zip(w, comps)))
    got = ds.log_prob(x)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_gmm_density_integrates_to_one_and_samples_match() -> None:
    ds = make_dataset("gmm", **GMM_OPTIONS)
    # Riemann sum over a box that holds essentially all of the mass.
    grid = torch.linspace(-6, 7, 521, dtype=torch.float64)
    h = (grid[1] - grid[0]).item()
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    mass = ds.log_prob(pts).exp().sum().item() * h * h
    assert mass == pytest.approx(1.0, abs=1e-3)
    # Sample moments agree with the mixture's mean.
    s = ds.sample(50_000, generator=_gen(0)).double()
    mean = 0.25 * torch.tensor([-1.0, 0.5]) + 0.75 * torch.tensor([2.0, -1.0])
    assert (s.mean(dim=0) - mean).abs().max() < 0.03
    # Samples are more likely under the model than points far away.
    assert ds.log_prob(s[:1000]).mean() > ds.log_prob(s[:1000] + 5).mean()


@pytest.mark.parametrize(
    "options, match",
    [
        ({"means": [1.0, 2.0]}, "means"),
        ({"means": [[0.0, 0.0], [1.0, 1.0]], "stds": [1.0, 1.0, 1.0]}, "stds"),
        ({"means": [[0.0, 0.0], [1.0, 1.0]], "stds": [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]}, "stds"),
        ({"means": [[0.0, 0.0], [1.0, 1.0]], "stds": [1.0, -1.0]}, "stds"),
        ({"means": [[0.0, 0.0], [1.0, 1.0]], "stds": [1.0, [1.0, 2.0, 3.0]]}, "stds"),
        ({"means": [[0.0, 0.0], [1.0]]}, "means"),
        ({"means": [[0.0, 0.0], [1.0, 1.0]], "weights": [1.0]}, "weights"),
        ({"means": [[0.0, 0.0], [1.0, 1.0]], "weights": [1.0, -0.5]}, "weights"),
        ({}, "means"),
    ],
)
def test_gmm_bad_options_raise(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_dataset("gmm", **options)


def test_gmm_log_prob_rejects_wrong_dim() -> None:
    ds = make_dataset("gmm", **GMM_OPTIONS)
    with pytest.raises(ValueError):
        ds.log_prob(torch.zeros(4, 3))


def test_digits_shape_range_and_uint8_round_trip(digits: DigitsDataset) -> None:
    assert digits.shape == (1, 8, 8) and digits.dim == 64 and digits.is_image
    assert digits.num_train + digits.num_heldout == 1797
    assert digits.num_heldout == round(0.2 * 1797)
    x = digits.sample(256, generator=_gen(0))
    assert x.shape == (256, 1, 8, 8) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(x, digits.sample(256, generator=_gen(0)))
    # 8-bit values are exactly round(v * 255 / 16) for v in 0..16.
    allowed = {round(v * 255 / 16) for v in range(17)}
    assert set(digits.images_train_uint8.unique().tolist()) <= allowed
    # Exact round trip float -> uint8 for every dataset image.
    assert torch.equal(to_uint8(digits.train_images()), digits.images_train_uint8)
    assert torch.equal(to_uint8(digits.heldout_images()), digits.images_heldout_uint8)
    all_levels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(from_uint8(all_levels)), all_levels)
    assert to_uint8(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]


def test_digits_split_disjoint_and_deterministic(digits: DigitsDataset) -> None:
    assert set(digits.train_index.tolist()).isdisjoint(digits.heldout_index.tolist())
    assert len(set(digits.train_index.tolist()) | set(digits.heldout_index.tolist())) == 1797
    again = DigitsDataset()
    assert torch.equal(again.heldout_index, digits.heldout_index)
    assert not torch.equal(DigitsDataset(split_seed=1).heldout_index, digits.heldout_index)
    assert digits.labels_train is not None and digits.labels_heldout is not None
    assert digits.labels_train.shape == (digits.num_train,)
    assert set(digits.labels_heldout.tolist()) == set(range(10))
    # Training samples come from the train split only (with replacement).
    idx = digits.sample_indices(2000, generator=_gen(0))
    assert idx.min() >= 0 and idx.max() < digits.num_train


def test_digits_reference_held_out_and_capped(digits: DigitsDataset) -> None:
    ref = digits.reference(100)
    assert ref.shape == (100, 1, 8, 8)
    assert torch.equal(ref, digits.reference(100))
    held = {tuple(r.tolist()) for r in digits.images_heldout_uint8.reshape(digits.num_heldout, -1)}
    assert all(tuple(r.tolist()) in held for r in to_uint8(ref).reshape(100, -1))
    everything = digits.reference(10_000)
    assert everything.shape[0] == digits.num_heldout
    assert torch.equal(everything, digits.heldout_images())


def _write_pngs(folder: Path, n: int, size: tuple[int, int], mode: str = "RGB") -> list[np.ndarray]:
    from PIL import Image

    rng = np.random.RandomState(0)
    arrays = []
    for i in range(n):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        arr = rng.randint(0, 256, size=shape, dtype=np.uint8)
        sub = folder / "a" if i % 2 else folder / "b" / "nested"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr, mode=mode).save(sub / f"img_{i:02d}.png")
        arrays.append(arr)
    return arrays


def test_image_folder_reads_pngs(tmp_path: Path) -> None:
    arrays = _write_pngs(tmp_path, 10, (8, 8))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = make_dataset("image_folder", root=tmp_path, image_size=8, channels=3, holdout_fraction=0.2)
    assert ds.shape == (3, 8, 8) and ds.is_image
    assert ds.num_train + ds.num_heldout == 10 and ds.num_heldout == 2
    # No resize at native size: stored pixels are the written pixels exactly.
    written = {a.transpose(2, 0, 1).tobytes() for a in arrays}
    stored = torch.cat([ds.images_train_uint8, ds.images_heldout_uint8])
    assert {img.numpy().tobytes() for img in stored} == written
    x = ds.sample(5, generator=_gen(0))
    assert x.shape == (5, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert ds.reference(100).shape == (2, 3, 8, 8)


def test_image_folder_resize_and_grayscale(tmp_path: Path) -> None:
    _write_pngs(tmp_path, 4, (20, 12))
    ds = make_dataset("image_folder", root=str(tmp_path), image_size=6, channels=1)
    assert ds.shape == (1, 6, 6)
    assert ds.sample(3, generator=_gen(0)).shape == (3, 1, 6, 6)


def test_image_folder_missing_or_empty(tmp_path: Path) -> None:
    missing = tmp_path / "does_not_exist"
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        make_dataset("image_folder", root=missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        make_dataset("image_folder", root=empty)
    with pytest.raises(ValueError, match="channels"):
        make_dataset("image_folder", root=tmp_path, channels=2)


def _write_fake_cifar(folder: Path, n_per_batch: int = 6) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    written = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.randint(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.randint(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": []}, f)
        written[name] = (data, labels)
    return written


def test_cifar10_fake_batches(tmp_path: Path) -> None:
    written = _write_fake_cifar(tmp_path / "cifar-10-batches-py")
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        ds = make_dataset("cifar10", root=root)
        assert isinstance(ds, Cifar10Dataset)
        assert ds.shape == (3, 32, 32) and ds.num_train == 30 and ds.num_heldout == 6
        test_data, test_labels = written["test_batch"]
        # Row layout is the standard one: 1024 red, then green, then blue, row-major.
        assert torch.equal(ds.images_heldout_uint8, torch.from_numpy(test_data).reshape(6, 3, 32, 32))
        assert ds.images_heldout_uint8[0, 1, 0, 0].item() == test_data[0, 1024]
        assert ds.labels_heldout.tolist() == test_labels
        first_train = torch.from_numpy(written["data_batch_1"][0]).reshape(6, 3, 32, 32)
        assert torch.equal(ds.images_train_uint8[:6], first_train)
        assert torch.equal(ds.reference(6), from_uint8(ds.images_heldout_uint8))
        assert ds.sample(4, generator=_gen(0)).shape == (4, 3, 32, 32)


def test_cifar10_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        make_dataset("cifar10", root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        make_dataset("cifar10", root=tmp_path)


def test_unknown_dataset_and_option() -> None:
    with pytest.raises(ValueError) as info:
        make_dataset("mnist")
    for name in DATASET_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="radius"):
        make_dataset("moons", radius=2.0)


def test_a_cifar10_batch_that_would_run_code_is_refused(tmp_path: Path) -> None:
    """A batch file is data: a pickle naming anything but numpy's array rebuilders is refused unexecuted."""
    _write_fake_cifar(tmp_path / "cifar-10-batches-py")
    marker = tmp_path / "payload-ran"
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({b"labels": [0], b"data": CodeRunningPickle(marker)}, f)
    with pytest.raises(ValueError, match="refused to load posix.system"):
        make_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


def test_hflip_is_seeded_differs_per_rank_generator_and_only_mirrors():
    """dataset.hflip mirrors each image left-right with probability 1/2, drawn from the batch's generator:
    the same seed gives the same flips, another rank's generator others; without it nothing is mirrored."""
    from fm_core.datasets import make_dataset

    plain, flipped = make_dataset("digits"), make_dataset("digits", hflip=True)
    rank = {r: torch.Generator().manual_seed(1000 + 7919 * r) for r in (0, 1)}
    a, b = flipped.sample(256, torch.Generator().manual_seed(1000)), flipped.sample(256, rank[0])
    assert torch.equal(a, b)  # deterministic per seed and rank
    other = flipped.sample(256, rank[1])
    assert not torch.equal(a, other)
    index = plain.sample_indices(256, torch.Generator().manual_seed(1000))
    originals = plain.sample(256, torch.Generator().manual_seed(1000))
    assert torch.equal(plain.sample_indices(256, torch.Generator().manual_seed(1000)), index)
    mirrored = [not torch.equal(x, o) for x, o in zip(a, originals, strict=True)]
    for x, o, m in zip(a, originals, mirrored, strict=True):  # each image is itself or its mirror image
        assert torch.equal(x, o.flip(-1) if m else o)
    assert 0.35 < sum(mirrored) / len(mirrored) < 0.65


def test_the_training_split_lives_on_its_device_as_uint8_and_batches_come_from_there():
    from fm_core.datasets import make_dataset

    ds = make_dataset("digits").to_device("meta")
    assert ds.images_train_uint8.dtype == torch.uint8 and ds.images_train_uint8.device.type == "meta"
    batch = ds.sample(8, torch.Generator().manual_seed(0))
    assert batch.device.type == "meta" and batch.dtype == torch.float32
    assert ds.images_heldout_uint8.device.type == "cpu"  # references and bits/dim stay on the CPU


def test_image_folder_labels_come_from_class_subfolders(tmp_path: Path) -> None:
    arrays = _write_pngs(tmp_path / "classes", 12, (8, 8))  # odd i under a/, even i under b/nested/
    ds = make_dataset("image_folder", root=tmp_path / "classes", image_size=8, holdout_fraction=0.25)
    assert ds.classes == ["a", "b"] and ds.num_classes == 2
    by_class = {0: {a.transpose(2, 0, 1).tobytes() for i, a in enumerate(arrays) if i % 2},
                1: {a.transpose(2, 0, 1).tobytes() for i, a in enumerate(arrays) if not i % 2}}  # fmt: skip
    x, y = ds.sample_with_labels(40, generator=_gen(3))
    stored = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    assert all(img.numpy().tobytes() in by_class[int(label)] for img, label in zip(stored, y, strict=True))
    torch.testing.assert_close(ds.sample(40, generator=_gen(3)), x)  # the same draw with or without labels
    # Images at the top level (or a single class) give no labels.
    _write_pngs(tmp_path / "flat", 2, (8, 8))
    for path in (tmp_path / "flat" / "a").iterdir():
        path.rename(tmp_path / "flat" / path.name)
    flat = make_dataset("image_folder", root=tmp_path / "flat", image_size=8, holdout_fraction=0.5)
    assert flat.num_classes is None and flat.sample_with_labels(3, generator=_gen(0))[1] is None
    assert make_dataset("digits").num_classes == 10
