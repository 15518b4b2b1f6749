"""Datasets by name: the registry behind ``make_dataset``, checked on import against the torch-free specs.

A module of its own because it names both the synthetic sets (fm_core.data) and the image sets
(fm_core.image_data), which itself builds on fm_core.data.
"""

from __future__ import annotations

import inspect
from typing import Any

from fm_core.data import CheckerboardDataset, Dataset, EightGaussiansDataset, GaussianMixtureDataset, MoonsDataset
from fm_core.dataset_specs import DATASET_SPECS
from fm_core.image_data import Cifar10Dataset, DigitsDataset, ImageFolderDataset, ImageNet32Dataset, ImageNet64Dataset
from fm_core.names import DATASET_NAMES, DATASET_OPTIONS

_REGISTRY: dict[str, type[Dataset]] = {
    "checkerboard": CheckerboardDataset,
    "8gaussians": EightGaussiansDataset,
    "moons": MoonsDataset,
    "gmm": GaussianMixtureDataset,
    "digits": DigitsDataset,
    "image_folder": ImageFolderDataset,
    "cifar10": Cifar10Dataset,
    "imagenet32": ImageNet32Dataset,
    "imagenet64": ImageNet64Dataset,
}


def _defaults(cls: type[Dataset]) -> dict[str, Any]:
    """The constructor's keyword arguments and their defaults, in order."""
    params = inspect.signature(cls.__init__).parameters
    return {p: params[p].default for p in params if p not in ("self", "name")}


def _spec_agrees(name: str, cls: type[Dataset]) -> bool:
    """The torch-free spec sweep files are validated against describes this constructor exactly."""
    spec = DATASET_SPECS[name]
    return (
        _defaults(cls) == {o.name: o.default for o in spec.options}
        and tuple(_defaults(cls)) == DATASET_OPTIONS[name]
        and cls.is_image == spec.is_image
    )


assert tuple(_REGISTRY) == DATASET_NAMES
assert all(_spec_agrees(name, cls) for name, cls in _REGISTRY.items()), "update fm_core.dataset_specs"


def make_dataset(name: str, **options: Any) -> Dataset:
    """Build a dataset by name; unknown names or options raise ValueError listing what is valid."""
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset '{name}'; choose one of {', '.join(DATASET_NAMES)}")
    cls = _REGISTRY[key]
    params = DATASET_OPTIONS[key]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(repr(u) for u in unknown)} for dataset '{key}'; "
            f"valid options: {', '.join(params) if params else '(none)'}"
        )
    return cls(**options)
