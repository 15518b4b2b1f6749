"""Finite 8-bit image datasets with a fixed train / held-out split: digits, a folder of images, CIFAR-10,
Downsampled ImageNet 32x32 and 64x64.

Images are stored as 8-bit integers and served as floats in [-1, 1] (fm_core.data's ``from_uint8``).
Nothing here downloads anything: ``digits`` ships with scikit-learn, ``image_folder``, ``cifar10``,
``imagenet32`` and ``imagenet64`` read local files only.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fm_core.data import Dataset, check_n, from_uint8
from fm_core.downsampled_imagenet import NUM_CLASSES, batch_rows, check_arrays, dataset_name, folder_files

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CIFAR_DIRNAME = "cifar-10-batches-py"
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_FILE = "test_batch"


def _split_indices(
    n: int, holdout_fraction: float, split_seed: int, option_prefix: str
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-seed (legacy NumPy RNG: stable across versions) train / held-out index split."""
    if not (0.0 <= holdout_fraction < 1.0):
        raise ValueError(f"{option_prefix}: option 'holdout_fraction' must be in [0, 1), got {holdout_fraction!r}")
    perm = np.random.RandomState(split_seed).permutation(n)
    n_held = int(round(holdout_fraction * n))
    if holdout_fraction > 0 and n >= 2:
        n_held = min(max(n_held, 1), n - 1)
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


class ImageDataset(Dataset):
    """Finite 8-bit images with a fixed train / held-out split.

    The raw integers stay available (``images_train_uint8``, ``images_heldout_uint8``) because
    dequantization and exact bits/dim need them; ``labels_train`` / ``labels_heldout`` are
    int64 class labels, or ``None`` when the source has none.
    """

    is_image = True

    def __init__(
        self,
        name: str,
        images_train_uint8: Tensor,
        images_heldout_uint8: Tensor,
        labels_train: Tensor | None = None,
        labels_heldout: Tensor | None = None,
        hflip: bool = False,
    ) -> None:
        if images_train_uint8.dtype != torch.uint8 or images_heldout_uint8.dtype != torch.uint8:
            raise ValueError(f"{name}: images must be stored as uint8")
        if images_train_uint8.shape[0] == 0:
            raise ValueError(f"{name}: the training split is empty")
        if images_train_uint8.shape[1:] != images_heldout_uint8.shape[1:]:
            raise ValueError(f"{name}: train and held-out images differ in shape")
        self.name = name
        self.shape = tuple(int(s) for s in images_train_uint8.shape[1:])
        self.images_train_uint8 = images_train_uint8.contiguous()
        self.images_heldout_uint8 = images_heldout_uint8.contiguous()
        self.labels_train = labels_train
        self.labels_heldout = labels_heldout
        self.hflip = bool(hflip)

    @property
    def num_train(self) -> int:
        return int(self.images_train_uint8.shape[0])

    @property
    def num_heldout(self) -> int:
        return int(self.images_heldout_uint8.shape[0])

    def train_images(self) -> Tensor:
        """The whole training split as floats in [-1, 1] (on the CPU)."""
        return from_uint8(self.images_train_uint8.cpu())

    def heldout_images(self) -> Tensor:
        """The whole held-out split as floats in [-1, 1], in stored order."""
        return from_uint8(self.images_heldout_uint8)

    def sample_indices(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Training-split indices drawn uniformly with replacement (to pair images with labels)."""
        return torch.randint(0, self.num_train, (check_n(n),), generator=generator)

    @property
    def num_classes(self) -> int | None:
        """How many classes the labels name (None: the source has no labels)."""
        return None if self.labels_train is None else int(self.labels_train.max()) + 1

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Training images drawn uniformly *with replacement*, as float32 in [-1, 1] on the device the training
        split lives on (`to_device`: gathered and converted there, never copied from the CPU per batch); with
        `hflip`, each mirrored left-right with probability 1/2 (drawn from `generator`: the same per seed and
        rank). The held-out split and the references stay on the CPU."""
        return self.sample_with_labels(n, generator)[0]

    def sample_with_labels(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """`sample` and the drawn images' class labels (None without labels), on the images' device."""
        index = self.sample_indices(n, generator)
        labels = None if self.labels_train is None else self.labels_train[index].to(self.images_train_uint8.device)
        return self._images_at(index, generator), labels

    def _images_at(self, index: Tensor, generator: torch.Generator | None) -> Tensor:
        n = len(index)
        flip = torch.rand(n, generator=generator) < 0.5 if self.hflip else None
        images = from_uint8(self.images_train_uint8[index.to(self.images_train_uint8.device)])
        if flip is not None:
            flip = flip.to(images.device)[:, None, None, None]
            images = torch.where(flip, images.flip(-1), images)
        return images

    def to_device(self, device: str | torch.device) -> ImageDataset:
        """Keep the training split (uint8: a quarter of float32's memory) on the training device."""
        self.images_train_uint8 = self.images_train_uint8.to(device)
        return self

    def reference_indices(self, n: int, seed: int = 0) -> Tensor:
        """Held-out indices used by :meth:`reference` (all of them, in order, if n >= split size)."""
        n = check_n(n)
        if n >= self.num_heldout:
            return torch.arange(self.num_heldout)
        perm = np.random.RandomState(int(seed)).permutation(self.num_heldout)[:n]
        return torch.from_numpy(np.sort(perm)).long()

    def reference(self, n: int, seed: int = 0) -> Tensor:
        """Held-out images, never seen in training.

        If ``n`` exceeds the held-out split, the whole split is returned -- fewer than ``n``
        rows, so callers should use ``len(result)``.  Otherwise a ``seed``-fixed subset of size n.
        """
        return from_uint8(self.images_heldout_uint8[self.reference_indices(n, seed)])


class DigitsDataset(ImageDataset):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download).

    Pixel values 0..16 become 8-bit integers round(v * 255 / 16), shape (1, 8, 8).  The split
    is a fixed-seed permutation with ``holdout_fraction`` of the images held out.
    """

    def __init__(self, holdout_fraction: float = 0.2, split_seed: int = 0, hflip: bool = False) -> None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        raw = np.asarray(bunch.images, dtype=np.float64)  # (N, 8, 8), 0..16
        images = torch.from_numpy(np.rint(raw * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1)
        labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
        tr, ho = _split_indices(images.shape[0], holdout_fraction, split_seed, "digits")
        tr_t, ho_t = torch.from_numpy(tr), torch.from_numpy(ho)
        super().__init__("digits", images[tr_t], images[ho_t], labels[tr_t], labels[ho_t], hflip=hflip)
        self.holdout_fraction = float(holdout_fraction)
        self.split_seed = int(split_seed)
        self.train_index = tr_t  # positions in load_digits() order
        self.heldout_index = ho_t


def _load_image(path: Path, image_size: int | None, channels: int) -> np.ndarray:
    """Read one file as uint8 (C, H, W): convert mode, centre-crop to square, resize (bicubic)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        if image_size is not None:
            w, h = im.size
            if w != h:  # crop rather than stretch, so objects keep their aspect ratio
                s = min(w, h)
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s))
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), resample=Image.Resampling.BICUBIC)
        arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = np.ascontiguousarray(arr.transpose(2, 0, 1))
    return arr


class ImageFolderDataset(ImageDataset):
    """Every PNG/JPEG under ``root`` (recursively, sorted by path), loaded once into memory.

    Images are converted to ``channels`` (1: grayscale, 3: RGB), centre-cropped to a square
    and resized to ``image_size`` (``None`` keeps the native size, which must then agree).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        image_size: int | None = 32,
        channels: int = 3,
        holdout_fraction: float = 0.1,
        split_seed: int = 0,
        hflip: bool = False,
    ) -> None:
        if root is None:
            raise ValueError("image_folder: option 'root' is required (a folder of PNG/JPEG files)")
        if channels not in (1, 3):
            raise ValueError(f"image_folder: option 'channels' must be 1 or 3, got {channels!r}")
        bad_size = isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
        if image_size is not None and bad_size:
            raise ValueError(
                f"image_folder: option 'image_size' must be a positive integer or None, got {image_size!r}"
            )
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise FileNotFoundError(f"image_folder: root '{root_path}' does not exist or is not a directory")
        files = sorted(p for p in root_path.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(
                f"image_folder: no {'/'.join(s.lstrip('.') for s in _IMAGE_SUFFIXES)} files found under '{root_path}'"
            )
        arrays = [_load_image(p, image_size, channels) for p in files]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(
                f"image_folder: images under '{root_path}' differ in size {sorted(shapes)}; set option 'image_size'"
            )
        images = torch.from_numpy(np.stack(arrays))
        tr, ho = _split_indices(len(files), holdout_fraction, split_seed, "image_folder")
        # Class labels from class subfolders (root/<class>/...), as torchvision's ImageFolder reads them;
        # a folder with images outside them, or with one class only, has no labels.
        parents = [p.relative_to(root_path).parts for p in files]
        self.classes = sorted({parts[0] for parts in parents}) if all(len(parts) > 1 for parts in parents) else []
        labels = None
        if len(self.classes) > 1:
            index = {name: i for i, name in enumerate(self.classes)}
            labels = torch.tensor([index[parts[0]] for parts in parents], dtype=torch.int64)
        super().__init__(
            "image_folder", images[torch.from_numpy(tr)], images[torch.from_numpy(ho)],
            None if labels is None else labels[torch.from_numpy(tr)], None if labels is None else labels[torch.from_numpy(ho)],
            hflip=hflip,
        )  # fmt: skip
        self.root = root_path
        self.files_train = [files[i] for i in tr]
        self.files_heldout = [files[i] for i in ho]


def _resolve_cifar_dir(root: str | Path) -> Path:
    """Accept the folder holding ``cifar-10-batches-py/`` or that folder itself."""
    root_path = Path(root).expanduser()
    expected = (
        f"expected the python-pickle CIFAR-10 layout: '{_CIFAR_DIRNAME}/' containing "
        f"{', '.join(_CIFAR_TRAIN_FILES)} and {_CIFAR_TEST_FILE}; pass either that folder or its parent"
    )
    for candidate in (root_path / _CIFAR_DIRNAME, root_path):
        if all((candidate / f).is_file() for f in (*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE)):
            return candidate
    if not root_path.exists():
        raise FileNotFoundError(f"cifar10: root '{root_path}' does not exist; {expected}")
    raise FileNotFoundError(f"cifar10: no complete CIFAR-10 batches under '{root_path}'; {expected}")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10's batches are pickles of dicts, lists, bytes and numpy arrays. Unpickling may call whatever a
    file names, so only what rebuilds a numpy array may be named: any other global (os.system, say) is refused
    before it can run."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR-10 batch holds only arrays and lists")
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> tuple[Tensor, Tensor]:
    with open(path, "rb") as f:
        try:
            batch: dict[Any, Any] = _ArraysOnlyUnpickler(f, encoding="bytes").load()
        except pickle.UnpicklingError as err:
            raise ValueError(f"cifar10: '{path}': {err}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"cifar10: '{path}' is not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"cifar10: '{path}' is not a CIFAR-10 batch (missing 'data' or 'labels')")
    arr = np.asarray(data, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != 3 * 32 * 32 or arr.shape[0] != len(labels):
        raise ValueError(f"cifar10: '{path}' has data of shape {arr.shape}; expected (N, 3072) with N labels")
    images = torch.from_numpy(arr.reshape(-1, 3, 32, 32).copy())
    return images, torch.as_tensor(np.asarray(labels, dtype=np.int64))


class Cifar10Dataset(ImageDataset):
    """CIFAR-10 from a local python-pickle copy: train = data_batch_1..5, reference = test_batch."""

    def __init__(self, root: str | Path | None = None, hflip: bool = False) -> None:
        if root is None:
            raise ValueError(f"cifar10: option 'root' is required (the folder containing '{_CIFAR_DIRNAME}/')")
        folder = _resolve_cifar_dir(root)
        train = [_load_cifar_batch(folder / f) for f in _CIFAR_TRAIN_FILES]
        test_images, test_labels = _load_cifar_batch(folder / _CIFAR_TEST_FILE)
        super().__init__(
            "cifar10",
            torch.cat([b[0] for b in train]),
            test_images,
            torch.cat([b[1] for b in train]),
            test_labels,
            hflip=hflip,
        )
        self.root = folder


def _read_npz_images(files: list[Path], resolution: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 3, r, r) uint8 and 0-based int64 labels of `files` in order, the first `limit` of them
    where given. Every file's headers are checked before any image is read; the result is allocated once and
    each file's arrays are copied into it, so memory peaks at the result plus one file's arrays."""
    rows = [batch_rows(path, resolution) for path in files]
    total = sum(rows) if limit is None else min(limit, sum(rows))
    images = np.empty((total, 3, resolution, resolution), dtype=np.uint8)
    labels = np.empty(total, dtype=np.int64)
    start = 0
    for path in files:
        if start == total:
            break
        with np.load(path, allow_pickle=False) as npz:  # never unpickle: the files are untrusted input
            data, ids = npz["data"], npz["labels"]
        check_arrays(path, resolution, (data.dtype, data.shape), (ids.dtype, ids.shape))  # as read, not as announced
        if ids.min() < 1 or ids.max() > NUM_CLASSES:
            raise ValueError(
                f"{dataset_name(resolution)}: '{path}' has labels {ids.min()} to {ids.max()}; the files number "
                f"their classes 1 to {NUM_CLASSES}"
            )
        take = min(len(data), total - start)
        images[start : start + take] = data[:take].reshape(take, 3, resolution, resolution)  # channel-planar rows
        labels[start : start + take] = ids[:take].astype(np.int64) - 1
        start += take
    return images, labels


class DownsampledImageNetDataset(ImageDataset):
    """Downsampled ImageNet (Chrabaszcz et al., 2017) from the official npz files in one local folder
    (fm_core.downsampled_imagenet): train = train_data_batch_1..10 (the first `max_images` of them where given),
    reference = val_data; labels 0..999.

    All the training images are held in memory as uint8: 1.28M x 3 x r x r bytes, 3.9 GB at 32x32 and
    15.7 GB at 64x64 (the held-out 50,000: 154 MB and 614 MB), plus one file's arrays while reading.
    """

    resolution: int = 0  # set by each resolution's class

    def __init__(self, root: str | Path | None = None, hflip: bool = False, max_images: int | None = None) -> None:
        name = dataset_name(self.resolution)
        if root is None:
            raise ValueError(f"{name}: option 'root' is required (the folder of the official npz files)")
        if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
            raise ValueError(f"{name}: option 'max_images' must be a positive integer or None, got {max_images!r}")
        train_files, heldout_file = folder_files(root, self.resolution)
        train_images, train_labels = _read_npz_images(train_files, self.resolution, max_images)
        heldout_images, heldout_labels = _read_npz_images([heldout_file], self.resolution)
        super().__init__(
            name, torch.from_numpy(train_images), torch.from_numpy(heldout_images),
            torch.from_numpy(train_labels), torch.from_numpy(heldout_labels), hflip=hflip,
        )  # fmt: skip
        self.root = heldout_file.parent

    @property
    def num_classes(self) -> int:
        """ImageNet's 1000 classes, whichever of them the images read (`max_images`) happen to hold."""
        return NUM_CLASSES


class ImageNet32Dataset(DownsampledImageNetDataset):
    resolution = 32


class ImageNet64Dataset(DownsampledImageNetDataset):
    resolution = 64
