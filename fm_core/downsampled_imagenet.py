"""Downsampled ImageNet (Chrabaszcz, Loshchilov & Hutter, 2017) in its official npz files: their names, and
what each file must hold, checked from the arrays' headers without reading an image.

The official downloads (image-net.org: "Imagenet32_train_npz" and "Imagenet32_val_npz", likewise 64, whose
train set comes in two parts) unpack to train_data_batch_1.npz ... train_data_batch_10.npz and val_data.npz;
put all eleven in one folder. Each holds ``data``, N rows of 3*H*W uint8 pixels, channel-planar (all red, then
all green, then all blue, each plane row-major, as in CIFAR-10), and ``labels``, N class ids 1..1000 (some
files also a ``mean`` image, which is not used). fm_core.image_data reads them; `fmx validate` checks a folder
with :func:`check_folder` (through fm_core.dataset_specs) before anything starts.

The files are untrusted input: numpy reads them with allow_pickle=False, and a file whose header names
Python objects (a pickle inside the npz) is refused before anything of it is loaded.
Torch-free, and numpy is loaded only by the checks: `fmx validate` imports this module for every sweep.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO, Any

TRAIN_FILES = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
HELDOUT_FILE = "val_data.npz"
#: The files number their classes 1..1000; fmx's labels are those ids minus one.
NUM_CLASSES = 1000


def dataset_name(resolution: int) -> str:
    return f"imagenet{resolution}"


def _layout(resolution: int) -> str:
    return (
        f"expected the official Downsampled ImageNet {resolution}x{resolution} npz files in one folder: "
        f"{TRAIN_FILES[0]} ... {TRAIN_FILES[-1]} and {HELDOUT_FILE}"
    )


def folder_files(root: str | Path, resolution: int) -> tuple[list[Path], Path]:
    """The train batches (in order) and the held-out file under `root`; FileNotFoundError naming what is
    missing."""
    folder = Path(root).expanduser()
    name = dataset_name(resolution)
    if not folder.is_dir():
        raise FileNotFoundError(f"{name}: root '{folder}' does not exist or is not a folder; {_layout(resolution)}")
    missing = [f for f in (*TRAIN_FILES, HELDOUT_FILE) if not (folder / f).is_file()]
    if missing:
        some = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise FileNotFoundError(f"{name}: '{folder}' lacks {some}; {_layout(resolution)}")
    return [folder / f for f in TRAIN_FILES], folder / HELDOUT_FILE


def check_arrays(path: Path, resolution: int, data: tuple[Any, tuple[int, ...]], labels: tuple[Any, tuple[int, ...]]) -> int:
    """The number of images in one file from its arrays' (dtype, shape); ValueError naming the file where they
    are not `resolution` x `resolution` images with one integer label each."""
    where = f"{dataset_name(resolution)}: '{path}'"
    for key, (dtype, _) in (("data", data), ("labels", labels)):
        if dtype.hasobject:
            raise ValueError(f"{where}: '{key}' holds Python objects (a pickle), refused unread; the files hold only numbers")
    (data_dtype, data_shape), (labels_dtype, labels_shape) = data, labels
    width = 3 * resolution * resolution
    if data_dtype.kind != "u" or data_dtype.itemsize != 1:
        raise ValueError(f"{where}: 'data' is {data_dtype}, not uint8 pixels")
    if len(data_shape) != 2 or data_shape[1] != width:
        side = math.isqrt(data_shape[1] // 3) if len(data_shape) == 2 else 0
        hint = f" (rows of {side}x{side} images: another resolution's files?)" if side and 3 * side * side == data_shape[1] else ""
        raise ValueError(
            f"{where}: 'data' has shape {tuple(data_shape)}{hint}; expected (N, {width}): "
            f"3 x {resolution} x {resolution} channel-planar pixels per row"
        )
    if data_shape[0] == 0:
        raise ValueError(f"{where}: holds no images")
    if labels_dtype.kind not in "iu" or tuple(labels_shape) != (data_shape[0],):
        raise ValueError(
            f"{where}: 'labels' ({labels_dtype}, shape {tuple(labels_shape)}) must be {data_shape[0]} integer "
            "class ids, one per row of 'data'"
        )
    return int(data_shape[0])


def _npy_header(member: IO[bytes]) -> tuple[Any, tuple[int, ...]]:
    """(dtype, shape) of one .npy member, from its header alone."""
    import numpy as np  # here, not at the top: `fmx validate` of other datasets never pays numpy's import

    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f"npy format version {version} is not one numpy's savez writes for these arrays")
    return dtype, shape


def batch_rows(path: Path, resolution: int) -> int:
    """The number of images in one npz file, from its arrays' headers alone (no image is read): ValueError
    naming the file where it is not an npz of `data` and `labels` as the official files hold them."""
    where = f"{dataset_name(resolution)}: '{path}'"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            headers = {}
            for key in ("data", "labels"):
                if f"{key}.npy" not in names:
                    held = ", ".join(sorted(n.removesuffix(".npy") for n in names)) or "nothing"
                    raise ValueError(f"{where}: has no '{key}' array (it holds {held}); {_layout(resolution)}")
                with archive.open(f"{key}.npy") as member:
                    try:
                        headers[key] = _npy_header(member)
                    except ValueError as err:
                        raise ValueError(f"{where}: '{key}' is not a readable numpy array: {err}") from None
    except zipfile.BadZipFile:
        raise ValueError(f"{where}: not an npz archive (a zip of .npy arrays); {_layout(resolution)}") from None
    return check_arrays(path, resolution, headers["data"], headers["labels"])


def check_folder(root: str | Path, resolution: int) -> None:
    """Every file `root` must hold is there and holds `resolution` images with labels (headers only: this
    reads kilobytes, not the gigabytes of pixels). What `fmx validate` runs for imagenet32 / imagenet64."""
    train, heldout = folder_files(root, resolution)
    for path in (*train, heldout):
        batch_rows(path, resolution)
