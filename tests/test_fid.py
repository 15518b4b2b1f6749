"""FID by the standard protocol (fm_core.fid, fm_core.fid_files, eval.fid): the value against torchmetrics and
closed forms, the quantization, the statistics files and their cache, the detector's checksum, and what sweep
validation refuses. All on the CPU with a scripted stand-in detector (tests/fid_helpers.py); nothing downloads."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from fm_core import fid_files
from fm_core.data import from_uint8
from fm_core.fid import (
    DetectorError, FeatureMoments, batches, cached_reference, detector_file, fid, image_stats, load_detector, quantize,
    reference_key,
)  # fmt: skip
from fm_core.fid_files import FidFileError, FidStats, read_stats, write_stats
from orchestrator.cells import eval_digest
from orchestrator.records import trial_params
from orchestrator.plan import plan_sweep
from orchestrator.config_errors import ConfigError
from orchestrator.validation import parse_sweep
from tests.fid_helpers import save_stand_in_detector


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("detector") / "stand_in.pt"
    save_stand_in_detector(path)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _images(n: int, seed: int, low: int = 0, high: int = 256, size: int = 12) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, 3, size, size), generator=g, dtype=torch.uint8)


# --------------------------------------------------------------------------------------------
# The value
# --------------------------------------------------------------------------------------------


class _TorchmetricsFeature(nn.Module):
    """torchmetrics calls its feature module as module(uint8 images): the detector's standard call, wrapped."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector
        self.num_features = 16

    def forward(self, x: Tensor) -> Tensor:
        return self.detector(x, return_features=True)


def test_fid_equals_torchmetrics_on_the_same_images_and_detector(detector_path: Path):
    from torchmetrics.image.fid import FrechetInceptionDistance

    detector = load_detector(detector_path, _sha(detector_path))
    real, fake = _images(400, 0), _images(300, 1, low=90, high=256, size=10)  # other sizes: the detector resizes
    metric = FrechetInceptionDistance(feature=_TorchmetricsFeature(detector), normalize=False)
    for part in batches(real, 128):
        metric.update(part, real=True)
    for part in batches(fake, 128):
        metric.update(part, real=False)
    expected = float(metric.compute())
    ours = fid(image_stats(detector, batches(fake, 64), "cpu"), image_stats(detector, batches(real, 50), "cpu"))
    assert expected > 1.0  # two different sets: a value far from 0, so the relative tolerance means something
    assert ours == pytest.approx(expected, rel=1e-6)


def test_the_fid_of_a_set_against_itself_is_zero_whatever_the_batching(detector_path: Path):
    detector = load_detector(detector_path, _sha(detector_path))
    images = _images(300, 2)
    one, other = image_stats(detector, batches(images, 300), "cpu"), image_stats(detector, batches(images, 7), "cpu")
    assert fid(one, other) == pytest.approx(0.0, abs=1e-8)
    assert one.count == 300 and one.digest == FidStats(one.mu.copy(), one.sigma.copy()).digest


def test_the_fid_of_two_gaussians_is_their_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)  # do not commute: sqrtm(S1 S2) is not trivial
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)  # tr (S1^1/2 S2 S1^1/2)^1/2, by symmetric eigenvalues only
    closed = float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(inner).sum())
    assert fid(FidStats(m1, s1), FidStats(m2, s2)) == pytest.approx(closed, rel=1e-9)
    # One dimension: (m1 - m2)^2 + (s1 - s2)^2 in standard deviations.
    assert fid(FidStats(np.array([1.0]), np.array([[4.0]])), FidStats(np.array([-2.0]), np.array([[1.0]]))) == pytest.approx(9 + 1)


def test_grayscale_is_measured_as_its_rgb_repetition(detector_path: Path):
    detector = load_detector(detector_path, _sha(detector_path))
    gray = _images(50, 4)[:, :1]
    one, three = image_stats(detector, [gray], "cpu"), image_stats(detector, [gray.repeat(1, 3, 1, 1)], "cpu")
    np.testing.assert_array_equal(one.mu, three.mu)


def test_streamed_moments_are_the_mean_and_unbiased_covariance_even_far_from_zero():
    rng = np.random.default_rng(1)
    # float32 features (as a detector gives) whose mean is far larger than their spread: sums of raw outer products
    # would lose the covariance to cancellation (about 1e12 against 1)
    features = (1e6 + rng.normal(size=(1000, 5)) @ rng.normal(size=(5, 5))).astype(np.float32)
    moments = FeatureMoments()
    for part in np.array_split(features, 7):
        moments.add(torch.from_numpy(part))
    features = features.astype(np.float64)
    stats = moments.stats()
    np.testing.assert_allclose(stats.mu, features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(features, rowvar=False), rtol=1e-8)
    with pytest.raises(ValueError, match="at least 2"):
        single = FeatureMoments()
        single.add(torch.ones(1, 3))
        single.stats()


def test_quantization_is_edms_and_keeps_dataset_images_as_they_are():
    x = torch.tensor([-1.0, 1.0, 0.0, -3.0, 3.0, 0.999, -0.999])
    assert quantize(x).tolist() == [0, 255, 128, 0, 255, 255, 0]
    every = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(quantize(from_uint8(every)), every)  # the 8-bit images a split holds, measured as they are


def test_a_detector_must_have_the_standard_call_and_output(detector_path: Path, tmp_path: Path):
    class NoFeatures(nn.Module):
        def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
            return x.float().mean()

    path = tmp_path / "scalar.pt"
    torch.jit.script(NoFeatures()).save(str(path))
    with pytest.raises(DetectorError, match=r"expected \(N, D\) features"):
        image_stats(load_detector(path, _sha(path)), [_images(4, 0)], "cpu")
    with pytest.raises(ValueError, match="uint8 NCHW"):
        image_stats(load_detector(detector_path, _sha(detector_path)), [_images(4, 0).float()], "cpu")


# --------------------------------------------------------------------------------------------
# The detector's checksum
# --------------------------------------------------------------------------------------------


def test_a_detector_whose_bytes_changed_is_refused_before_it_is_loaded(detector_path: Path, tmp_path: Path):
    copied = tmp_path / "detector.pt"
    copied.write_bytes(detector_path.read_bytes())
    sha = _sha(copied)
    load_detector(copied, sha)
    save_stand_in_detector(copied, seed=1)  # another network in its place, as after validation
    with pytest.raises(DetectorError, match=f"not {sha}"):
        load_detector(copied, sha)


def test_a_detector_url_is_fetched_once_checked_and_kept_only_when_it_matches(detector_path: Path, tmp_path: Path):
    sha, cache = _sha(detector_path), tmp_path / "cache"
    local = detector_file(detector_path.as_uri(), sha, cache)  # file://: the download path, without a network
    assert local.parent == cache / "fid-detectors" and _sha(local) == sha
    inode = local.stat().st_ino
    assert detector_file(detector_path.as_uri(), sha, cache) == local and local.stat().st_ino == inode  # not again
    with pytest.raises(DetectorError, match="not kept"):
        detector_file(detector_path.as_uri(), "0" * 64, cache)
    assert sorted(p.name for p in (cache / "fid-detectors").iterdir()) == [local.name]  # nothing half-written
    with pytest.raises(DetectorError, match="only https, http, file"):
        detector_file("ftp://example.org/inception.pt", sha, cache)


# --------------------------------------------------------------------------------------------
# Statistics files and the cache
# --------------------------------------------------------------------------------------------


def test_edm_style_statistics_files_are_read(tmp_path: Path):
    path = tmp_path / "cifar10-32x32.npz"
    np.savez(path, mu=np.arange(3.0), sigma=np.eye(3, dtype=np.float32))
    stats, key = read_stats(path)
    assert key is None and stats.count is None and stats.sigma.dtype == np.float64
    np.testing.assert_array_equal(stats.mu, [0, 1, 2])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"mu": np.zeros(3)}, "no sigma array"),
        ({"mean": np.zeros(3), "cov": np.eye(3)}, "no mu or sigma array"),
        ({"mu": np.zeros(3), "sigma": np.eye(4)}, r"shape \(D,\) and sigma \(D, D\)"),
        ({"mu": np.array([0.0, np.nan]), "sigma": np.eye(2)}, "NaN or infinity"),
        ({"mu": np.array(["a", "b"]), "sigma": np.eye(2)}, "must be numbers"),
        ({"mu": np.array([{}, {}], dtype=object), "sigma": np.eye(2)}, "unreadable"),  # would need unpickling
    ],
)
def test_unusable_statistics_files_are_refused_with_the_reason(tmp_path: Path, arrays: dict[str, Any], message: str):
    path = tmp_path / "stats.npz"
    np.savez(path, **arrays)
    with pytest.raises(FidFileError, match=message) as err:
        read_stats(path)
    assert str(path) in str(err.value)


def test_statistics_files_that_are_not_archives_or_inflate_too_far_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    text = tmp_path / "stats.npz"
    text.write_text("mu, sigma")
    with pytest.raises(FidFileError, match="not an .npz archive"):
        read_stats(text)
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, mu=np.zeros(512), sigma=np.zeros((512, 512)))  # 2 MiB of zeros in a few KiB
    monkeypatch.setattr(fid_files, "MAX_STATS_BYTES", 64 * 1024)
    assert bomb.stat().st_size < 64 * 1024
    with pytest.raises(FidFileError, match="would take"):
        read_stats(bomb)
    with pytest.raises(FidFileError, match="not a regular file"):
        read_stats(tmp_path)


def _counting(stats: FidStats) -> tuple[list[int], Any]:
    calls: list[int] = []

    def compute() -> FidStats:
        calls.append(1)
        return stats

    return calls, compute


def test_reference_statistics_are_computed_once_then_read_from_the_cache(tmp_path: Path):
    stats = FidStats(np.arange(3.0), np.eye(3), 10)
    folder, key = tmp_path / "fid-reference", "a" * 32
    calls, compute = _counting(stats)
    first, cached = cached_reference(folder, key, compute)
    assert (cached, len(calls)) == (False, 1) and first is stats
    entry = folder / f"{key}.npz"
    before = entry.stat()
    again, cached = cached_reference(folder, key, compute)
    assert (cached, len(calls)) == (True, 1) and again.digest == stats.digest and again.count == 10
    assert (entry.stat().st_ino, entry.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in folder.iterdir()] == [entry.name]  # no temporary file left


def test_a_cache_entry_that_is_not_its_key_or_is_a_link_is_computed_again(tmp_path: Path):
    stats = FidStats(np.zeros(2), np.eye(2), 5)
    folder, key = tmp_path / "fid-reference", "b" * 32
    folder.mkdir()
    write_stats(folder / f"{key}.npz", FidStats(np.ones(2), np.eye(2)), key="c" * 32)  # another key's content
    calls, compute = _counting(stats)
    with pytest.warns(UserWarning, match="records key"):
        assert cached_reference(folder, key, compute) == (stats, False)
    outside = tmp_path / "outside.npz"
    write_stats(outside, FidStats(np.ones(2), np.eye(2)), key="d" * 32)
    (folder / f"{key}.npz").unlink()
    (folder / f"{key}.npz").symlink_to(outside)  # a link planted on the storage is never read through
    with pytest.warns(UserWarning, match="symbolic link"):
        assert cached_reference(folder, key, compute) == (stats, False)
    assert not (folder / f"{key}.npz").is_symlink() and read_stats(outside)[1] == "d" * 32  # replaced, not followed
    linked = tmp_path / "linked"
    linked.symlink_to(folder)
    with pytest.raises(FidFileError, match="symbolic link"):
        cached_reference(linked, key, compute)
    assert len(calls) == 2


def test_the_reference_key_is_the_images_and_the_detector():
    images = _images(20, 3)
    key = reference_key(images, "1" * 64)
    assert key == reference_key(images.clone(), "1" * 64)
    other = images.clone()
    other[7, 0, 0, 0] ^= 1
    assert len({key, reference_key(other, "1" * 64), reference_key(images, "2" * 64), reference_key(images[:19], "1" * 64)}) == 4


# --------------------------------------------------------------------------------------------
# eval.fid in a sweep file
# --------------------------------------------------------------------------------------------

DIGITS: dict[str, Any] = {
    "name": "fid", "dataset": {"name": "digits"}, "model": {"kind": "unet", "model_channels": 8, "num_heads": 1},
    "train": {"steps": 10, "batch_size": 32}, "eval": {"samples": 16, "likelihood_points": 0, "reference_tol": None},
    "grid": {"solver": ["euler"], "nfe": [4]},
}  # fmt: skip


def _with_fid(detector: str, **fid: Any) -> dict[str, Any]:
    data = copy.deepcopy(DIGITS)
    data["eval"]["fid"] = {"detector": detector, "samples": 64, "batch_size": 32, **fid}
    return data


def _refused(data: dict[str, Any], key: str, fragment: str, base: Path | None = None) -> None:
    with pytest.raises(ConfigError) as err:
        parse_sweep(data, "fid.yaml", base)
    assert err.value.key == key, str(err.value)
    assert fragment in err.value.message and "cannot be used" not in err.value.message, str(err.value)


def test_validation_pins_the_detector_and_records_its_sha256(detector_path: Path):
    config = parse_sweep(_with_fid(detector_path.name), "fid.yaml", base=detector_path.parent)
    fid_config = config.eval.fid
    assert fid_config is not None and fid_config.detector == str(detector_path)
    assert fid_config.detector_sha256 == _sha(detector_path) and fid_config.reference.split == "train"
    same = parse_sweep(_with_fid(str(detector_path), detector_sha256=_sha(detector_path).upper()), "fid.yaml")
    assert same.eval.fid == fid_config


def test_validation_refuses_what_fid_cannot_use(detector_path: Path, tmp_path: Path):
    good = str(detector_path)
    _refused(_with_fid(good, detector_sha256="0" * 64), "eval.fid.detector_sha256", f"has sha256 {_sha(detector_path)}, not {'0' * 64}")
    _refused(_with_fid(str(tmp_path / "absent.pt")), "eval.fid.detector", f"file '{tmp_path / 'absent.pt'}' does not exist")
    _refused(_with_fid(str(tmp_path)), "eval.fid.detector", "is not a regular file")
    _refused(_with_fid(good, detector_sha256="abc"), "eval.fid.detector_sha256", "64 hexadecimal digits")
    _refused(_with_fid("https://example.org/inception-2015-12-05.pt"), "eval.fid.detector_sha256", "needs its sha256")
    _refused(_with_fid("ftp://example.org/inception.pt", detector_sha256="0" * 64), "eval.fid.detector", "one of https")
    _refused(_with_fid(good, reference={"split": "train", "stats": "x.npz"}), "eval.fid.reference", "not both")
    _refused(_with_fid(good, reference={"split": "test"}), "eval.fid.reference.split", "train")
    (tmp_path / "bad.npz").write_text("not numbers")
    _refused(_with_fid(good, reference={"stats": str(tmp_path / "bad.npz")}), "eval.fid.reference.stats", "not an .npz archive")
    moons = {**_with_fid(good), "dataset": {"name": "moons"}, "model": {"kind": "mlp"}}
    _refused(moons, "eval.fid", "dataset 'moons' has none (digits, image_folder, cifar10, imagenet32, imagenet64 have)")


def test_a_url_with_its_sha256_is_accepted_without_fetching_anything():
    sha = "a" * 64
    config = parse_sweep(_with_fid("https://example.org/inception-2015-12-05.pt", detector_sha256=sha), "fid.yaml")
    assert config.eval.fid is not None and config.eval.fid.detector_sha256 == sha


def test_the_evaluation_key_follows_what_changes_the_value(detector_path: Path, tmp_path: Path):
    base = parse_sweep(_with_fid(str(detector_path)), "fid.yaml")
    key = eval_digest(base)
    assert key != eval_digest(parse_sweep(DIGITS, "fid.yaml"))
    moved = tmp_path / "elsewhere.pt"
    moved.write_bytes(detector_path.read_bytes())
    assert eval_digest(parse_sweep(_with_fid(str(moved), batch_size=7), "fid.yaml")) == key  # same file, other batching
    other = tmp_path / "other.pt"
    save_stand_in_detector(other, seed=3)
    changed = [_with_fid(str(other)), _with_fid(str(detector_path), samples=65), _with_fid(str(detector_path), reference={"split": "heldout"})]
    assert len({key, *(eval_digest(parse_sweep(data, "fid.yaml")) for data in changed)}) == 4
    assert eval_digest(parse_sweep(DIGITS, "fid.yaml")) == "81c4d193"  # without eval.fid, the key it had before FID


def test_fid_paths_take_environment_variables_and_params_show_them_as_written(
    detector_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    np.savez(tmp_path / "cifar10-32x32.npz", mu=np.zeros(16), sigma=np.eye(16))
    monkeypatch.setenv("FID_DETECTOR", str(detector_path))
    monkeypatch.setenv("FID_STATS", str(tmp_path))
    config = parse_sweep(_with_fid("${FID_DETECTOR}", reference={"stats": "${FID_STATS}/cifar10-32x32.npz"}), "fid.yaml")
    assert config.written_as == {"eval.fid.detector": "${FID_DETECTOR}", "eval.fid.reference.stats": "${FID_STATS}/cifar10-32x32.npz"}
    assert config.eval.fid is not None and config.eval.fid.reference.stats == str(tmp_path / "cifar10-32x32.npz")
    params = trial_params(config, plan_sweep(config).trainings[0])
    assert params["eval.fid.detector"] == "${FID_DETECTOR}" and params["eval.fid.detector_sha256"] == _sha(detector_path)
    assert params["eval.fid.reference.stats"] == "${FID_STATS}/cifar10-32x32.npz" and params["eval.fid.samples"] == 64
    monkeypatch.setenv("FID_STATS", str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "cifar10-32x32.npz").write_bytes((tmp_path / "cifar10-32x32.npz").read_bytes())
    moved = parse_sweep(_with_fid("${FID_DETECTOR}", reference={"stats": "${FID_STATS}/cifar10-32x32.npz"}), "fid.yaml")
    assert eval_digest(moved) == eval_digest(config)  # a file taken as written, as data folders are
    assert not any(name.startswith("eval.fid") for name in trial_params(parse_sweep(DIGITS, "fid.yaml"), plan_sweep(config).trainings[0]))

