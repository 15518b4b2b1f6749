"""What the torch-free modules of fm_core share: PyTorch imported at first use, options as dataclass fields,
and classes registered by name.

fm_core.paths and fm_core.time_sampling define their classes without importing PyTorch, so that the sweep
driver and `fmx validate` read the names, options and capabilities from the classes themselves.
"""

from __future__ import annotations

import importlib
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, ClassVar


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


@dataclass(frozen=True)
class Range:
    """The values an option can take by what it means; `open_low` / `open_high` leave out the ends."""

    low: float
    high: float
    open_low: bool = False
    open_high: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def __str__(self) -> str:
        return f"{'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


def option(default: float, low: float, high: float, open_low: bool = False, open_high: bool = False) -> Any:
    """A numeric option of a schedule or time sampler with its range, which validation reads: every option
    has one (tests/test_paths.py checks), so no number reaches a trial that only a NaN would refuse."""
    return field(default=default, metadata={"range": Range(low, high, open_low, open_high)})


def option_defaults(cls: type) -> dict[str, Any]:
    """A dataclass's options (its fields with defaults) and their defaults; a class that is none has none."""
    if not is_dataclass(cls):
        return {}
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def option_range(cls: type, name: str) -> Range | None:
    """The declared range of one option (None where the field has none)."""
    return next((f.metadata.get("range") for f in fields(cls) if f.name == name), None)


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
        bounds = option_range(cls, name)
        if bounds is None:  # a class written without ranges: its author is told, before any trial runs
            return name, f"{what}: option '{name}' declares no range (write it with fm_core.lazy.option(default, low, high))"
        if not bounds.holds(value):
            return name, f"{what}: option '{name}' must be in {bounds}, got {value!r}"
    try:
        cls(**options)
    except (TypeError, ValueError) as err:
        return None, str(err)
    return None


def register(registry: dict[str, type], cls: type, attribute: str, what: str) -> None:
    """From a base class's `__init_subclass__`: a subclass that sets `attribute` (its name) itself joins
    `registry` under it, so validation, training and tables find it by name; two classes of one name are refused."""
    if attribute in cls.__dict__:
        name = getattr(cls, attribute)
        if name in registry:
            raise TypeError(f"two {what} are named '{name}'")
        registry[name] = cls


class Registered:
    """The base of a family of classes found by name (paths, time samplers, objectives, couplings): the family's
    base class sets `_registry`, `_family` and, where its members are not named by `name`, `_name_attribute`;
    each subclass that sets that attribute itself then joins the registry as it is defined, so validation,
    training and tables find it by name (`by_name`) and read its options from its dataclass fields."""

    _registry: ClassVar[dict[str, type]]
    _family: ClassVar[str]
    #: What one member is called in messages ("path", "time sampling", "coupling").
    _called: ClassVar[str]
    _name_attribute: ClassVar[str] = "name"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_registry" not in cls.__dict__:  # the family's base class itself is no member
            register(cls._registry, cls, cls._name_attribute, cls._family)

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """Its options (the dataclass fields with defaults) and their defaults."""
        return option_defaults(cls)

    @classmethod
    def by_name(cls, name: str, **options: Any) -> Any:
        """The member `name` built with `options`; a ValueError naming the name, or the option and its range."""
        if name not in cls._registry:
            raise ValueError(f"unknown {cls._called} '{name}'; choose one of {', '.join(cls._registry)}")
        member = cls._registry[name]
        problem = option_problem(member, options, f"{cls._called} '{name}'")
        if problem:
            raise ValueError(problem[1])
        return member(**options)
