"""Each dataset's options and what each accepts, torch-free, beside the datasets they describe.

A sweep file's dataset options are checked against these before anything starts (types, shapes, signs,
sums): the same values the dataset constructors (fm_core.data, fm_core.image_data) would reject in every
trial are refused up front.
fm_core.datasets asserts on import that these names and defaults agree with its constructors' signatures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fm_core import downsampled_imagenet
from fm_core.checks import OPEN_FRACTION, Range, integers, is_number, short_repr

#: The default of an option that has none: the dataset cannot be built without it.
REQUIRED: Any = None
#: The splits of an image dataset that FID reference statistics can be computed from (eval.fid.reference.split).
IMAGE_SPLITS = ("train", "heldout")
#: Scales of 2D data (board size, circle radius, stds, means): float32 data and a usable model need far less.
COORDINATE = Range(-1e6, 1e6)
SCALE = Range(0.0, 1e6, lo_open=True)


class OptionError(ValueError):
    """An unusable dataset option: `option` names it (``weights``), the message says why."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(message)


@dataclass(frozen=True)
class Option:
    """One keyword argument of a dataset's constructor: its default and the check of a given value."""

    name: str
    check: Callable[[Any], object]
    default: Any = REQUIRED
    required: bool = False
    path: bool = False  # a local path: the sweep file may write it with ${VAR}


def _planar(options: Mapping[str, Any]) -> tuple[int, ...]:
    return (2,)


@dataclass(frozen=True)
class DatasetSpec:
    options: tuple[Option, ...]
    is_image: bool = False
    #: Class labels come with the data (digits, CIFAR-10; an image folder from its class subfolders): a
    #: class-conditional model (train.label_dropout) and guidance (grid.cfg_scale) need them.
    has_labels: bool = False
    #: The metric of sample quality evaluations report for this dataset (fm_core.sample_metrics.SAMPLE_METRICS):
    #: sliced W2 for low-dimensional data, the classifier FD for digits; None where fmx has none built in
    #: (FID, which needs the user's Inception detector, is eval.fid: see `fid_splits`).
    sample_metric: str | None = "sliced_w2"
    #: Checks across options (gmm: stds and weights must fit the means' K x d).
    joint: Callable[[Mapping[str, Any]], None] | None = field(default=None)
    #: One sample's shape from the (checked) options, None where only the data can tell (native image sizes):
    #: what the model must fit, known before any data is read.
    shape: Callable[[Mapping[str, Any]], tuple[int, ...] | None] = _planar
    #: What the `root` folder must hold, checked by `fmx validate` before anything starts (names and array
    #: headers, never the images): raises OSError or ValueError naming the file. None: only that it exists.
    check_root: Callable[[Path], None] | None = None

    @property
    def fid_splits(self) -> tuple[str, ...]:
        """The splits eval.fid can take reference statistics from: an image dataset's own; none of other data."""
        return IMAGE_SPLITS if self.is_image else ()

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    @property
    def path_options(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options if o.path)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty path")
    return value


def _optional(check: Callable[[Any], object]) -> Callable[[Any], object]:
    return lambda value: None if value is None else check(value)


def _one_of(*allowed: int) -> Callable[[Any], object]:
    def check(value: Any) -> object:
        if not integers(min(allowed), max(allowed)).contains(value) or value not in allowed:  # not True == 1
            raise ValueError(f"must be one of {', '.join(map(str, allowed))}")
        return value

    return check


# --------------------------------------------------------------------------------------------
# gmm: means K x d, stds a scalar / K scalars / K rows of d (or a mix), weights K non-negative numbers
# --------------------------------------------------------------------------------------------


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _numbers(value: Any, rng: Range, where: str = "") -> list[float]:
    """A non-empty flat list of numbers each in `rng`; `where` ("row 2, ") locates it in the message."""
    if not _is_list(value) or not value:
        raise ValueError(f"{where}must be a non-empty list of numbers")
    for i, x in enumerate(value):
        if not rng.contains(x):
            raise ValueError(f"{where}entry {i} must be {rng} (got {short_repr(x)})")
    return list(value)


def _gmm_means(value: Any) -> tuple[int, int]:
    """K x d of a list of K rows of d finite numbers."""
    if not _is_list(value) or not value or not all(_is_list(row) for row in value):
        raise ValueError("must be a non-empty K x d list of lists (one row of d numbers per component)")
    for i, row in enumerate(value):
        _numbers(row, COORDINATE, f"row {i}, ")
        if len(row) != len(value[0]):
            raise ValueError(f"rows differ in length: row 0 has {len(value[0])} numbers, row {i} has {len(row)}")
    return len(value), len(value[0])


def _gmm_stds(value: Any, k: int, d: int) -> None:
    """A positive scalar, or K entries each a positive scalar or a row of d positive numbers."""
    if is_number(value):
        SCALE.check(value)
        return
    if not _is_list(value) or len(value) != k:
        raise ValueError(f"must be one number, or K = {k} entries (each a number or a row of d = {d})")
    for i, entry in enumerate(value):
        if _is_list(entry):
            if len(entry) != d:
                raise ValueError(f"entry {i} has {len(entry)} numbers, not d = {d}")
            _numbers(entry, SCALE, f"row {i}, ")
        elif not SCALE.contains(entry):
            raise ValueError(f"entry {i} must be {SCALE} or a row of d = {d} such numbers (got {short_repr(entry)})")


def _gmm_weights(value: Any, k: int) -> None:
    weights = _numbers(value, Range(0.0, 1e6))
    if len(weights) != k:
        raise ValueError(f"needs K = {k} weights, one per row of means, got {len(weights)}")
    if math.fsum(weights) <= 0:
        raise ValueError("must not all be zero")


def _check_gmm(options: Mapping[str, Any]) -> None:
    """means fix K and d; stds and weights must fit them (the constructor's rules, without numpy)."""
    k, d = _as_option("means", _gmm_means, options["means"])
    for name, check in (("stds", lambda v: _gmm_stds(v, k, d)), ("weights", lambda v: _gmm_weights(v, k))):
        if options.get(name) is not None:
            _as_option(name, check, options[name])


def _as_option(name: str, check: Callable[[Any], Any], value: Any) -> Any:
    """check(value), its ValueError re-raised as the OptionError of option `name`."""
    try:
        return check(value)
    except ValueError as err:
        raise OptionError(name, str(err)) from None


def _joint_only(value: Any) -> Any:
    return value  # checked by the dataset's joint check, which knows the other options


_HOLDOUT = Option("holdout_fraction", OPEN_FRACTION.check, 0.2)
_SPLIT_SEED = Option("split_seed", integers(0, 2**32 - 1).check, 0)  # numpy's RandomState
_ROOT = Option("root", _path, REQUIRED, required=True, path=True)
#: Random left-right mirroring of training images (CIFAR-10's standard augmentation; not for digits, whose
#: mirror images are other glyphs, but the choice is the file's).
_HFLIP = Option("hflip", _flag, False)


#: How many of Downsampled ImageNet's training images to read: the first N in file order (batch 1 first; not a
#: random subset), for a run that needs less memory than all of them (ImageNet 64: 15.7 GB); None: all.
_MAX_IMAGES = Option("max_images", _optional(integers(1, 2**31 - 1).check), None)


def _downsampled_imagenet(resolution: int) -> DatasetSpec:
    """imagenet32 / imagenet64: the official npz files of one resolution (fm_core.downsampled_imagenet)."""
    return DatasetSpec(
        (_ROOT, _HFLIP, _MAX_IMAGES),
        is_image=True,
        shape=lambda o: (3, resolution, resolution),
        has_labels=True,
        sample_metric=None,
        check_root=lambda root: downsampled_imagenet.check_folder(root, resolution),
    )


def _folder_shape(options: Mapping[str, Any]) -> tuple[int, ...] | None:
    size = options.get("image_size", 32)
    return None if size is None else (int(options.get("channels", 3)), int(size), int(size))


DATASET_SPECS: dict[str, DatasetSpec] = {
    "checkerboard": DatasetSpec((Option("size", SCALE.check, 4.0), Option("cells", integers(1, 1000).check, 4))),
    "8gaussians": DatasetSpec((Option("radius", SCALE.check, 4.0), Option("std", SCALE.check, 0.5))),
    "moons": DatasetSpec((Option("noise", Range(0.0, 1e6).check, 0.05),)),
    "gmm": DatasetSpec(
        (
            Option("means", _joint_only, REQUIRED, required=True),
            Option("stds", _joint_only, None),
            Option("weights", _joint_only, None),
        ),
        joint=_check_gmm,
        shape=lambda o: (len(o["means"][0]),),
    ),
    "digits": DatasetSpec((_HOLDOUT, _SPLIT_SEED, _HFLIP), is_image=True, shape=lambda o: (1, 8, 8), has_labels=True,
                          sample_metric="classifier_fd"),
    "image_folder": DatasetSpec(
        (
            _ROOT,
            Option("image_size", _optional(integers(1, 1024).check), 32),
            Option("channels", _one_of(1, 3), 3),
            Option("holdout_fraction", OPEN_FRACTION.check, 0.1),
            _SPLIT_SEED,
            _HFLIP,
        ),
        is_image=True,
        shape=_folder_shape,
        has_labels=True,
        sample_metric=None,
    ),
    "cifar10": DatasetSpec((_ROOT, _HFLIP), is_image=True, shape=lambda o: (3, 32, 32), has_labels=True, sample_metric=None),
    "imagenet32": _downsampled_imagenet(32),
    "imagenet64": _downsampled_imagenet(64),
}


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise OptionError naming the first unknown, missing or unusable option of dataset `name`."""
    spec = DATASET_SPECS[name]
    for key in options:
        if key not in spec.option_names:
            valid = ", ".join(spec.option_names) or "(none)"
            raise OptionError(str(key), f"unknown option for dataset '{name}'; valid: {valid}")
    for option in spec.options:
        value = options.get(option.name)
        if value is None and option.required:
            raise OptionError(option.name, f"dataset '{name}' needs option '{option.name}'")
        if option.name not in options or (value is None and option.default is None):
            continue  # not given, or given as the constructor's own default None
        try:
            option.check(value)
        except ValueError as err:
            raise OptionError(option.name, f"{err} (got {short_repr(value)})") from None
    if spec.joint is not None:
        spec.joint(options)
