"""Range checks of single option values, torch-free, so sweep files are checked before anything starts.

The sweep schema (orchestrator.schema) and the dataset specs (fm_core.dataset_specs) bound every number
with a :class:`Range`, so one rule decides what "a number" is: an int or a float, never a bool, never NaN
or infinity, and for integer options never a float (``8.5`` or ``1.0e30`` for a step count is a mistake).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def is_number(value: Any) -> bool:
    """An int or a float (a YAML number), not a bool: `true` where a number is expected is a mistake."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bound_text(x: float) -> str:
    """Powers of two minus one read as such (2**31 - 1), other bounds as short numbers."""
    if isinstance(x, int) and x >= 2**31 - 1 and (x + 1) & x == 0:
        return f"2**{(x + 1).bit_length() - 1} - 1"
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Range:
    """An interval of allowed values; `integer` ones accept only ints. `None` bounds are open-ended."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{kind} in {left}{_bound_text(self.lo)}, {_bound_text(self.hi)}{right}"
        if self.lo is not None:
            return f"{kind} {'>' if self.lo_open else '>='} {_bound_text(self.lo)}"
        if self.hi is not None:
            return f"{kind} {'<' if self.hi_open else '<='} {_bound_text(self.hi)}"
        return kind

    def contains(self, value: Any) -> bool:
        if not is_number(value) or (self.integer and not isinstance(value, int)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        # Python compares ints and floats exactly, so a huge int never overflows a float here.
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def check(self, value: Any) -> Any:
        """The value itself if it is in range, else ValueError('must be <this range>')."""
        if not self.contains(value):
            raise ValueError(f"must be {self}")
        return value


def integers(lo: int, hi: int) -> Range:
    """Integers in [lo, hi]."""
    return Range(lo, hi, integer=True)


#: Fractions strictly between 0 and 1 (tolerances, held-out fractions).
OPEN_FRACTION = Range(0.0, 1.0, lo_open=True, hi_open=True)
#: Seeds that every consumer accepts: numpy's RandomState (< 2**32, also given seed + 1) and torch's
#: manual_seed after the trainer's `seed * 100_003 + rank * 7919 + step` (< 2**63).
SEEDS = integers(0, 2**31 - 1)


def short_repr(value: Any, limit: int = 80) -> str:
    """repr() cut to `limit` characters: an error message quotes the input, never megabytes of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
