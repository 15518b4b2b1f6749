"""What the command line shows of a sweep's rows: the summary table, the rebuilt Parquet files and a paired
comparison of two methods. Loaded on first use by orchestrator.api (pandas); the report, which draws with
matplotlib, is a stage of its own (orchestrator.report_stage), so `fmx sweep` and `fmx tables` never import it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console, RenderableType

from orchestrator.compare import CellComparison, compare_methods, resolve_method
from orchestrator.errors import FewerRowsError
from orchestrator.publish import publish
from orchestrator.tables import cell_legend, display_table, method_label, summarize, to_markdown
from orchestrator.terminal_table import layout


def table_view(runs: pd.DataFrame, markdown: bool = False) -> tuple[pd.DataFrame | str, str]:
    """(the summary's display frame, or its Markdown; the legend of its cells)."""
    table = summarize(runs)
    return (to_markdown(table) if markdown else display_table(table)), cell_legend(table)


def terminal_table(runs: pd.DataFrame, console: Console) -> RenderableType:
    """The summary laid out for the console's width (orchestrator.terminal_table)."""
    table = summarize(runs)
    return layout(display_table(table), cell_legend(table), console.width, console)


def rebuild_tables(tracking_uri: str, sweep: str, out_dir: Path, allow_fewer: bool) -> tuple[pd.DataFrame, Path, Path]:
    """The publish stage on its own (rows, view, both Parquet files); FewerRowsError where it left them."""
    published = publish(tracking_uri, sweep, out_dir, allow_fewer)
    if published.runs_path is None or published.table_path is None:
        raise FewerRowsError(published.not_written)
    return published.runs, published.runs_path, published.table_path


def compare(
    runs: pd.DataFrame, method_a: str, method_b: str, metric: str, margin: float | None = None
) -> tuple[list[CellComparison], str, str]:
    cells = compare_methods(runs, method_a, method_b, metric, margin)
    return cells, method_label(*resolve_method(runs, method_a)), method_label(*resolve_method(runs, method_b))

