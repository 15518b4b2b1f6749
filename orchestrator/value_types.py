"""The sweep file's value types: numbers bounded by what they mean (fm_core.checks' ranges, stated in every
message), list axes without repeats. Used as `Annotated[...]` field types by orchestrator.schema."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from fm_core.checks import OPEN_FRACTION, SEEDS, Range, integers

#: Most optimisation steps, evaluation checkpoints and similar step counts (the paper's CIFAR-10 run: 400k).
MAX_STEPS = 10_000_000
#: Most points in one batch (training or evaluation): far beyond what fits a GPU for images.
MAX_BATCH = 100_000
#: Most NFE of one fixed-step solve: the paper's budgets are up to a few hundred.
MAX_NFE = 10_000


def in_range(rng: Range) -> BeforeValidator:
    """Metadata of an int or float field bounded by `rng` (`Annotated[int, in_range(integers(1, 64))]`): bools, NaN,
    infinity and floats for ints are refused, and the message states the allowed range. The field's type must
    match the range: int for `rng.integer`, else float."""
    return BeforeValidator(rng.check)


def _no_repeats(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """A list axis with a value twice would train or evaluate it twice (or silently once)."""
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"repeats {value!r}; list each value once")
        seen.add(value)
    return values


def _non_empty(values: tuple[Any, ...]) -> tuple[Any, ...]:
    if not values:
        raise ValueError("needs at least one value")
    return values


#: Metadata of a list axis (`Annotated[tuple[X, ...], DISTINCT]`): distinct values, a tuple once validated;
#: with NON_EMPTY after it, at least one.
DISTINCT = AfterValidator(_no_repeats)
NON_EMPTY = AfterValidator(_non_empty)


def head_channels(value: Any) -> Any:
    """-1 (the U-Net then takes num_heads heads) or a channel count per head."""
    if integers(-1, 4096).contains(value) and value != 0:
        return value
    raise ValueError("must be -1 (heads from num_heads) or an integer in [1, 4096]")


Count = Annotated[int, in_range(integers(1, MAX_STEPS))]
Seed = Annotated[int, in_range(SEEDS)]
Batch = Annotated[int, in_range(integers(1, MAX_BATCH))]
Nfe = Annotated[int, in_range(integers(1, MAX_NFE))]
#: A fraction strictly between 0 and 1 (a learning rate, a decay, a probability).
OpenFraction = Annotated[float, in_range(OPEN_FRACTION)]
Tolerance = OpenFraction
