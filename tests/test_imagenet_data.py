"""Downsampled ImageNet 32x32 and 64x64 from a folder of the official npz files (fm_core.image_data,
fm_core.downsampled_imagenet): layout, channel order, labels, held-out split, bad files, and the shipped sweeps."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fm_core.data import from_uint8
from fm_core.dataset_specs import DATASET_SPECS
from fm_core.datasets import make_dataset
from fm_core.downsampled_imagenet import HELDOUT_FILE, TRAIN_FILES
from orchestrator.config_errors import ConfigError
from orchestrator.validation import load_sweep, parse_sweep
from tests.bad_inputs import CodeRunningPickle
from tests.cli_helpers import REPO
from tests.shipped_sweeps_env import shipped_sweeps_env
from tests.imagenet_files import write_imagenet_folder

RESOLUTIONS = (32, 64)
N = 6  # images per file


@pytest.fixture(scope="module", params=RESOLUTIONS, ids=lambda r: f"imagenet{r}")
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, dict]:
    resolution = request.param
    root = tmp_path_factory.mktemp(f"imagenet{resolution}")
    return resolution, root, write_imagenet_folder(root, resolution, n=N)


def test_the_official_files_are_read_in_order_as_channel_planar_images_with_0_based_labels(folder):
    resolution, root, written = folder
    ds = make_dataset(f"imagenet{resolution}", root=str(root))
    assert ds.name == f"imagenet{resolution}" and ds.shape == (3, resolution, resolution)
    assert DATASET_SPECS[ds.name].shape({"root": str(root)}) == ds.shape
    assert (ds.num_train, ds.num_heldout, ds.num_classes) == (10 * N, N, 1000)
    # train = batches 1..10 in order; held-out = val_data; each row is C x H x W in C order.
    train = np.concatenate([written[f][0] for f in TRAIN_FILES])
    assert torch.equal(ds.images_train_uint8, torch.from_numpy(train))
    assert torch.equal(ds.images_heldout_uint8, torch.from_numpy(written[HELDOUT_FILE][0]))
    rows = np.load(root / HELDOUT_FILE)["data"]
    plane = resolution * resolution
    # A row is all red, then all green, then all blue, each plane row-major: pixel (c, y, x) is row[c*r*r + y*r + x].
    for c, y, x in [(0, 0, 0), (1, 0, 0), (2, 0, 0), (0, 0, 1), (0, 1, 0), (2, resolution - 1, resolution - 2)]:
        assert ds.images_heldout_uint8[3, c, y, x].item() == rows[3, c * plane + y * resolution + x]
    assert ds.labels_train.dtype == torch.int64
    assert ds.labels_train.tolist() == (np.concatenate([written[f][1] for f in TRAIN_FILES]) - 1).tolist()
    assert ds.labels_heldout.tolist() == (written[HELDOUT_FILE][1] - 1).tolist()
    # Pixels are served as cifar10's are: x / 127.5 - 1.
    assert torch.equal(ds.reference(N), from_uint8(torch.from_numpy(written[HELDOUT_FILE][0])))


def test_a_red_image_is_red(tmp_path: Path):
    """R plane first: an image written as (255 red, 0 green, 128 blue) reads as channels (1, -1, ~0)."""
    write_imagenet_folder(tmp_path, 32, n=1)
    data = np.concatenate([np.full(32 * 32, v, np.uint8) for v in (255, 0, 128)])[None]
    np.savez(tmp_path / HELDOUT_FILE, data=data, labels=np.array([7]))
    image = make_dataset("imagenet32", root=tmp_path).reference(1)[0]
    blue = from_uint8(torch.tensor(128, dtype=torch.uint8))  # 128 / 127.5 - 1 in float32
    assert image[0].eq(1.0).all() and image[1].eq(-1.0).all() and image[2].eq(blue).all() and blue > 0


def test_sampling_a_batch_draws_training_images_with_their_labels(folder):
    resolution, root, _ = folder
    ds = make_dataset(f"imagenet{resolution}", root=root, hflip=True)
    index = ds.sample_indices(16, torch.Generator().manual_seed(3))
    images, labels = ds.sample_with_labels(16, torch.Generator().manual_seed(3))
    assert images.shape == (16, 3, resolution, resolution) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(labels, ds.labels_train[index]) and labels.min() >= 0 and labels.max() <= 999
    for image, i in zip(images, index, strict=True):  # each itself or its mirror image
        original = from_uint8(ds.images_train_uint8[i])
        assert torch.equal(image, original) or torch.equal(image, original.flip(-1))


def test_max_images_reads_the_first_images_in_file_order(folder):
    resolution, root, written = folder
    ds = make_dataset(f"imagenet{resolution}", root=root, max_images=N + 2)
    first = np.concatenate([written[TRAIN_FILES[0]][0], written[TRAIN_FILES[1]][0][:2]])
    assert torch.equal(ds.images_train_uint8, torch.from_numpy(first)) and ds.num_heldout == N
    assert ds.num_classes == 1000  # the label space, whichever classes the images read hold
    assert make_dataset(f"imagenet{resolution}", root=root, max_images=10**6).num_train == 10 * N
    with pytest.raises(ValueError, match="max_images"):
        make_dataset(f"imagenet{resolution}", root=root, max_images=0)


def _object_array(path: Path) -> None:
    payload = np.empty(2, dtype=object)
    payload[:] = [CodeRunningPickle(path.parent / "payload-ran"), 0]
    np.savez(path, data=payload, labels=np.array([1, 2]))


#: A bad file written in place of train_data_batch_3.npz, and what its one error says.
BAD_FILES = {
    "wrong_width": (lambda p: np.savez(p, data=np.zeros((2, 3 * 16 * 16), np.uint8), labels=np.array([1, 2])),
                    "'data' has shape (2, 768) (rows of 16x16 images"),
    "no_labels": (lambda p: np.savez(p, data=np.zeros((2, 3 * 32 * 32), np.uint8)), "has no 'labels' array (it holds data)"),
    "object_array": (_object_array, "'data' holds Python objects (a pickle), refused unread"),
    "float_pixels": (lambda p: np.savez(p, data=np.zeros((2, 3 * 32 * 32)), labels=np.array([1, 2])), "'data' is float64, not uint8"),
    "label_count": (lambda p: np.savez(p, data=np.zeros((2, 3 * 32 * 32), np.uint8), labels=np.array([1])),
                    "must be 2 integer class ids"),
    "not_a_zip": (lambda p: p.write_bytes(b"\x80\x04not a zip at all"), "not an npz archive"),
    "bad_npy": (lambda p: _garbage_labels(p), "'labels' is not a readable numpy array"),
}  # fmt: skip


def _garbage_labels(path: Path) -> None:
    """An npz whose labels.npy member is not an .npy array."""
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("data.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros((2, 3 * 32 * 32), np.uint8))
        archive.writestr("labels.npy", b"garbage")


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_one_clear_error_naming_it_from_the_loader_and_from_validation(tmp_path: Path, case: str):
    write, fragment = BAD_FILES[case]
    root = tmp_path / "in32"
    write_imagenet_folder(root, 32)
    bad = root / TRAIN_FILES[2]
    write(bad)
    with pytest.raises(ValueError) as loading:
        make_dataset("imagenet32", root=root)
    validating = _refused(root)
    for err in (str(loading.value), validating.message):
        assert f"imagenet32: '{bad}'" in err and fragment in err, err
    assert validating.key == "dataset.root"
    assert not (root / "payload-ran").exists()


def test_labels_outside_1_to_1000_are_refused_when_read(tmp_path: Path):
    """0-based labels in the files (someone's conversion) would shift every class: refused, naming the file."""
    write_imagenet_folder(tmp_path, 32)
    np.savez(tmp_path / HELDOUT_FILE, data=np.zeros((2, 3072), np.uint8), labels=np.array([0, 999]))
    with pytest.raises(ValueError, match=f"'{tmp_path / HELDOUT_FILE}' has labels 0 to 999; the files number their classes 1 to 1000"):
        make_dataset("imagenet32", root=tmp_path)


def test_a_missing_or_incomplete_folder_names_what_is_missing(tmp_path: Path):
    write_imagenet_folder(tmp_path / "in64", 64)
    (tmp_path / "in64" / HELDOUT_FILE).unlink()
    for name, root, fragments in [
        ("imagenet64", tmp_path / "in64", ["lacks val_data.npz;", "train_data_batch_1.npz ... train_data_batch_10.npz"]),
        ("imagenet32", tmp_path / "empty", ["lacks train_data_batch_1.npz, train_data_batch_2.npz, train_data_batch_3.npz and 8 more"]),
    ]:
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(FileNotFoundError) as caught:
            make_dataset(name, root=root)
        err = _refused(root, name)
        assert all(f in str(caught.value) and f in err.message for f in fragments), (str(caught.value), err.message)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_dataset("imagenet64", root=tmp_path / "nowhere")


def _refused(root: Path, dataset: str = "imagenet32") -> ConfigError:
    data = {
        "name": "bad-imagenet", "dataset": {"name": dataset, "root": str(root)},
        "model": {"kind": "unet", "model_channels": 8, "channel_mult": [1, 2], "attention_resolutions": [16], "num_heads": 1},
        "train": {"steps": 10, "batch_size": 8}, "eval": {"samples": 10, "likelihood_points": 2},
        "grid": {"path": ["ot"], "objective": ["fm"], "solver": ["euler"], "nfe": [4]},
    }  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_sweep(data, "s.yaml")
    assert caught.value.key == "dataset.root" and "\n" not in str(caught.value) and len(str(caught.value)) < 600
    return caught.value


def test_the_shipped_sweeps_hold_table_3s_set_ups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    env = shipped_sweeps_env(tmp_path)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    in32, in64 = (load_sweep(REPO / "sweeps" / f"imagenet{r}.yaml") for r in RESOLUTIONS)
    for config, resolution in ((in32, 32), (in64, 64)):
        assert config.dataset.name == f"imagenet{resolution}"
        assert config.written_as == {"dataset.root": f"${{IMAGENET{resolution}_ROOT}}", "eval.fid.detector": "${FID_DETECTOR}"}
        assert config.eval.fid is not None and config.eval.fid.samples == 50_000 and config.eval.fid.reference.split == "train"
        assert (config.model.num_heads, config.model.num_head_channels, config.model.dropout, config.model.num_res_blocks) == (4, 64, 0.0, 3)
    m, t = in32.model, in32.train
    assert (m.model_channels, m.channel_mult, m.attention_resolutions) == (256, (1, 2, 2, 2), (16, 8))
    assert (t.batch_size, t.num_workers, t.steps, t.lr, t.lr_schedule, t.warmup_steps, t.precision) == (1024, 4, 250_000, 1e-4, "poly", 20_000, "fp32")
    m, t = in64.model, in64.train
    assert (m.model_channels, m.channel_mult, m.attention_resolutions) == (192, (1, 2, 3, 4), (32, 16, 8))
    assert (t.batch_size, t.num_workers, t.steps, t.lr, t.lr_schedule, t.warmup_steps) == (2048, 16, 157_000, 1e-4, "constant", 0)
    assert t.precision != "fp32"  # mixed precision
    # Each sweep's folder must hold its own resolution's files.
    monkeypatch.setenv("IMAGENET64_ROOT", env["IMAGENET32_ROOT"])
    with pytest.raises(ConfigError, match="rows of 32x32 images: another resolution's files"):
        load_sweep(REPO / "sweeps" / "imagenet64.yaml")
