"""The summary table laid out for a terminal, or a log, of a given width: a number is never split across lines.

Three layouts, the first that fits the width is printed: one table with every value column, each cell on one
line (`mean ± std [low, high]`); else tables of as many value columns as fit, each repeating the row labels,
cells on two lines (the interval below the mean) and headers shortened to their name (the rest of a header
goes to the legend); else one block per row, a value per line, which fits any width a label fits.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

#: The display table's columns that say which row it is; the others are values.
LABEL_COLUMNS = ("method", "step", "solver", "K", "seeds", "failed")


def layout(shown: pd.DataFrame, legend: str, width: int, console: Console) -> RenderableType:
    """`shown` (tables.display_table) as tables or blocks no wider than `width`, with `legend` under them."""
    labels = [c for c in shown.columns if c in LABEL_COLUMNS]
    values = [c for c in shown.columns if c not in LABEL_COLUMNS]
    wide = _table(shown, labels + values)
    if _natural_width(wide, console) <= width:
        return Group(wide, Text(legend, style="dim"))
    short = {c: str(c).split(" (")[0] for c in values}
    notes = [f"{short[c]}: {str(c)[len(short[c]) + 1 :].strip('()')}" for c in values if short[c] != c]
    legend = "; ".join([legend, *notes])
    stacked = shown[labels].copy()
    for column in values:
        stacked[short[column]] = [str(v).replace(" [", "\n[", 1) for v in shown[column]]
    groups = _pack([short[c] for c in values], lambda group: _natural_width(_table(stacked, labels + group), console) <= width)
    if groups is not None:
        return Group(*[_table(stacked, labels + group) for group in groups], Text(legend, style="dim"))
    return Group(*_blocks(shown, labels, values, short), Text(legend, style="dim"))


def _table(frame: pd.DataFrame, columns: list[str]) -> Table:
    table = Table()
    for column in columns:
        table.add_column(escape(str(column)), no_wrap=True)
    for row in frame[columns].itertuples(index=False):  # escaped: `FM-OT [lr=0.001]` is text, not rich markup
        table.add_row(*(escape(str(v)) for v in row))
    return table


def _natural_width(table: Table, console: Console) -> int:
    """The width the table takes when nothing in it wraps."""
    return console.measure(table, options=console.options.update_width(10**6)).maximum


def _pack(columns: list[str], fits: Callable[[list[str]], bool]) -> list[list[str]] | None:
    """The columns in order, in as few consecutive groups as `fits` allows; None where one alone does not fit."""
    groups: list[list[str]] = []
    for column in columns:
        if groups and fits(groups[-1] + [column]):
            groups[-1].append(column)
        elif fits([column]):
            groups.append([column])
        else:
            return None
    return groups


def _blocks(shown: pd.DataFrame, labels: list[str], values: list[str], short: dict[str, str]) -> list[Text]:
    """One block per row: its labels on one line, then `name: value` lines (words wrap, numbers stay whole)."""
    blocks = []
    for row in shown.to_dict("records"):
        head = " · ".join(f"{row[c]}" if c in ("method", "solver") else f"{c} {row[c]}" for c in labels)
        lines = [head] + [f"  {short[c]}: {row[c]}" for c in values]
        blocks.append(Text("\n".join(lines)))
    return blocks
