"""The sample metric each dataset reports (fm_core.dataset_specs: `sample_metric`), by name.

A module of its own because it names both a raw-coordinate distance (fm_core.metrics) and the
digits-classifier Frechet distance (fm_core.feature_metrics), which itself builds on fm_core.metrics.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from fm_core.feature_metrics import classifier_frechet_distance
from fm_core.metrics import sliced_wasserstein

#: The sample metrics a dataset can name as its own (fm_core.dataset_specs: `sample_metric`), by name.
SAMPLE_METRICS: dict[str, Callable[[Tensor, Tensor], float]] = {
    "sliced_w2": lambda samples, reference: sliced_wasserstein(samples, reference),
    "classifier_fd": lambda samples, reference: classifier_frechet_distance(samples, reference),
}


def sample_metric(name: str, samples: Tensor, reference: Tensor) -> float:
    """A dataset's sample metric of `samples` against held-out `reference` data (lower is better)."""
    return SAMPLE_METRICS[name](samples, reference)
