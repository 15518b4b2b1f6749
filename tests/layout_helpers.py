"""What "readable at a width" means in tests: every number of the table is printed whole on one line."""

from __future__ import annotations

import re
from collections import Counter

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def assert_numbers_whole(texts: list[str], printed: str, width: int) -> None:
    """Every number of `texts` is found, whole, on a line of `printed`, and no line is wider than `width`."""
    wanted = Counter(n for text in texts for n in NUMBER.findall(text))
    found = Counter(n for line in printed.splitlines() for n in NUMBER.findall(line))
    assert not wanted - found, f"split or missing: {sorted(wanted - found)}\n{printed}"
    assert max(len(line) for line in printed.splitlines()) <= width, printed
