"""What the torch-free modules of fm_core share: PyTorch imported at first use, and options as dataclass fields.

fm_core.paths and fm_core.time_sampling define their classes without importing PyTorch, so that the sweep
driver and `fmx validate` read the names, options and capabilities from the classes themselves.
"""

from __future__ import annotations

import importlib
from dataclasses import MISSING, fields
from typing import Any


class LazyModule:
    """Stands in for a module until one of its names is used; each name is then kept on this object, so later
    uses cost an attribute lookup."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(importlib.import_module(self._name), attr)
        setattr(self, attr, value)
        return value


torch: Any = LazyModule("torch")


def option_defaults(cls: type) -> dict[str, Any]:
    """A dataclass's options (its fields with defaults) and their defaults."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def option_problem(cls: type, options: dict[str, Any], what: str) -> tuple[str | None, str] | None:
    """Why `options` cannot build `cls` (`what` names it in the message), or None: an unknown name or a value
    that is not a finite number (with that option's name), or one the class itself refuses (name None)."""
    import math

    known = option_defaults(cls)
    for name, value in options.items():
        if name not in known:
            return name, f"{what} has no option '{name}' (its options: {', '.join(known) or 'none'})"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return name, f"{what}: option '{name}' must be a finite number, got {value!r}"
    try:
        cls(**options)
    except (TypeError, ValueError) as err:
        return None, str(err)
    return None
