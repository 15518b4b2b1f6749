"""`fmx compare`'s words: a paired comparison of one evaluation cell as lines a terminal or a log can wrap.

Kept apart from orchestrator.compare (which reads pandas frames) so that the command line imports it for free.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.compare import CellComparison


def describe(cell: CellComparison) -> list[str]:
    """A cell's comparison as three lines of words (where, the numbers, the verdict): each number is one word,
    so a terminal or log of any width wraps between numbers, never inside one."""
    c, d, r = cell.comparison, cell.comparison.difference, cell.comparison.ratio
    n = len(c.seeds)
    where = f"step {cell.step} · {cell.setting}" + ("" if cell.dequant_draws is None else f" · K {cell.dequant_draws}")
    where += f" · {n} seed{'s' if n != 1 else ''}: A {_g(c.mean_a)}, B {_g(c.mean_b)}"
    if n < 2:
        numbers = f"A - B {_g(d.mean)} (no interval from {n} seed)"
    elif c.constant:
        numbers = f"A - B {_g(d.mean)} in every seed" + (f", A / B {_g(r.mean, 3)}" if r is not None else "")
    else:
        scale = f"A / B {_g(r.mean, 3)} [{_g(r.low, 3)}, {_g(r.high, 3)}], A - B {_g(d.mean)}" if r is not None else (
            f"A - B {_g(d.mean)} [{_g(d.low)}, {_g(d.high)}]")  # fmt: skip
        numbers = f"{scale}, d_z {_g(c.effect_size, 3)}, p {_g(c.p_value, 3)}"
        numbers += "" if c.margin is None else f", TOST p {_g(c.equivalence_p, 3)}"
    return [where, f"  {numbers}", f"  {c.verdict}"]


def _g(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}g}"
