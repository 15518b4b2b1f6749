"""MLflow runs -> tidy Parquet: one row per evaluated setting, and the paper-style mean/std summary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from fm_core.solvers import SETTING_FIELDS, SolverSetting
from orchestrator.rows import (
    EvalRow, columns_with_role, is_positive, parquet_columns, parquet_dtypes, shown_value_fields, value_label,
)
from orchestrator.errors import FewerRowsError
from fm_core.method_names import method_label
from orchestrator.stats import mean_interval
from orchestrator.out_folders import make_folder
from orchestrator.tags import TAG_TRAIN_AXES, TAG_TRIAL

RUN_COLUMNS = parquet_columns()
#: One table row per method x evaluation setting, averaged over seeds.
GROUP_COLUMNS = [c for c in columns_with_role("method", "setting") if c != "model"]
VALUE_COLUMNS = columns_with_role("value")
#: How each group's values were measured (units, the likelihood's protocol): shown beside them, not averaged.
PROTOCOL_COLUMNS = columns_with_role("protocol")
SORT_COLUMNS = [c for c in columns_with_role("method", "seed", "setting") if c not in ("dataset", "model")]


def evaluation_rows(evaluations: list[tuple[Any, dict[str, Any]]]) -> list[EvalRow]:
    """Flatten each run's evaluations.json into rows. Rows written before rows carried their trial's fields get
    them from the file's summary."""
    rows: list[EvalRow] = []
    for run, content in evaluations:
        summary = {k: v for k, v in content.get("summary", {}).items() if k != "error"}  # a row's error is its own
        names = _names_now(run.data.tags)
        rows += [EvalRow.from_dict({**summary, **row, **names, "mlflow_run_id": run.info.run_id}) for row in content["rows"]]
    return rows


def _names_now(tags: dict[str, str]) -> dict[str, str | None]:
    """The trial id and grid.train values the file that asks for the run's cell now gives it (a reused cell
    keeps the rows it was trained with, under today's names); none where the run predates the tags."""
    if TAG_TRAIN_AXES not in tags:
        return {}
    return {"trial_id": tags[TAG_TRIAL], "train_axes": tags[TAG_TRAIN_AXES] or None}


def rows_frame(rows: list[EvalRow]) -> pd.DataFrame:
    """runs.parquet's frame: EvalRow's columns and dtypes, in a stable order."""
    frame = pd.DataFrame.from_records([row.as_dict() for row in rows], columns=RUN_COLUMNS).astype(parquet_dtypes())
    return frame.sort_values(SORT_COLUMNS, na_position="first", kind="stable").reset_index(drop=True)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, path, objective, coupling, step, solver, tol/nfe): for each value its n, mean, std and the
    95 % t-interval of the mean over seeds (`<value>_ci_low`, `<value>_ci_high`; NaN below two seeds); for a
    positive value, that of its log values, exponentiated (orchestrator.stats.mean_interval)."""
    ok = runs[runs["status"] == "ok"]
    keys = runs[GROUP_COLUMNS].drop_duplicates()
    grouped = ok.groupby(GROUP_COLUMNS, dropna=False)
    stats = grouped[VALUE_COLUMNS].agg(["mean", "std", "count"])
    stats.columns = [f"{col}_{'n' if stat == 'count' else stat}" for col, stat in stats.columns]
    for col in VALUE_COLUMNS:  # the 95 % Student-t interval of each cell's mean (orchestrator.stats)
        positive = is_positive(col)  # on the log scale: it stays above 0
        intervals = grouped[col].apply(lambda values, positive=positive: mean_interval(values.astype("float64").tolist(), positive=positive))
        stats[f"{col}_ci_low"] = [i.low for i in intervals]
        stats[f"{col}_ci_high"] = [i.high for i in intervals]
    stats["seeds"] = grouped.size()
    stats = stats.reset_index()
    failed = runs[runs["status"] != "ok"].groupby(GROUP_COLUMNS, dropna=False).size().rename("failed").reset_index()
    table = keys.merge(stats, on=GROUP_COLUMNS, how="left").merge(failed, on=GROUP_COLUMNS, how="left")
    table["seeds"] = table["seeds"].fillna(0).astype("int64")
    table["failed"] = table["failed"].fillna(0).astype("int64")
    units = runs.groupby(GROUP_COLUMNS, dropna=False)[PROTOCOL_COLUMNS].first().reset_index()
    table = table.merge(units, on=GROUP_COLUMNS, how="left")
    return table.sort_values(GROUP_COLUMNS, na_position="first", kind="stable").reset_index(drop=True)


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Atomic write: a reader never sees half a file, and a failed write (a full disk) leaves the old one and
    no temporary file behind."""
    make_folder(path.parent, "the tables' folder")
    tmp = path.with_suffix(".parquet.tmp")
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _rows_in(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, ValueError):
        return 0


RUNS_FILE, TABLE_FILE = "runs.parquet", "table.parquet"


def write_tables(runs: pd.DataFrame, out_dir: Path, allow_fewer: bool = False) -> tuple[Path, Path]:
    """runs.parquet and table.parquet; refuses (FewerRowsError) to replace a runs.parquet that has more rows
    than `runs`, unless asked: rows that vanished from the store must not vanish from the tables unsaid."""
    runs_path, table_path = out_dir / RUNS_FILE, out_dir / TABLE_FILE
    before = _rows_in(runs_path) if runs_path.exists() else 0
    if len(runs) < before and not allow_fewer:
        raise FewerRowsError(
            f"{runs_path} holds {before} rows but the MLflow store now gives {len(runs)}: left as it was "
            f"(was the store replaced or were runs deleted?)"
        )
    write_parquet(runs, runs_path)
    write_parquet(summarize(runs), table_path)
    return runs_path, table_path


def cell_legend(table: pd.DataFrame) -> str:
    """What the summary `table`'s cells show, said under it: the interval only where a row has two seeds or more,
    and on which scale each value's interval is taken."""
    seeds = table["seeds"]
    if seeds.empty or int(seeds.max()) < 2:
        return "cells: one seed's value (no std or interval from one seed)"
    positive = [value_label(f, table) for f in shown_value_fields() if is_positive(f.name) and table[f"{f.name}_mean"].notna().any()]
    legend = "cells: mean ± std over seeds [95 % Student-t interval of the mean"
    legend += f"; of {', '.join(filter(None, positive))}: of the geometric mean, from the log values, so it stays positive]" if positive else "]"
    return legend + ("; a row of one seed: its value alone" if int(seeds.min()) < 2 else "")


def _fmt(mean: Any, std: Any, low: Any = None, high: Any = None) -> str:
    if pd.isna(mean):
        return "-"
    text = f"{float(mean):.4g}"
    if not pd.isna(std):
        text += f" ± {float(std):.2g}"
    if low is not None and not pd.isna(low) and not pd.isna(high):
        text += f" [{float(low):.4g}, {float(high):.4g}]"
    return text


def _cells(table: pd.DataFrame, value: str) -> list[str]:
    columns = [f"{value}_{part}" for part in ("mean", "std", "ci_low", "ci_high")]
    return [_fmt(*row) for row in table[columns].itertuples(index=False)]


def method_labels(frame: pd.DataFrame) -> list[str]:
    """method_label of every row of a runs or summary frame."""
    columns = [frame[c] for c in ("path", "objective", "coupling")] + [frame.get("train_axes", pd.Series([None] * len(frame)))]
    return [method_label(p, o, c, a) for p, o, c, a in zip(*columns, strict=True)]


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The summary as the paper shows it: one readable column per quantity."""
    out = pd.DataFrame()
    out["method"] = method_labels(table)
    if table["train_step"].nunique() > 1:
        out["step"] = table["train_step"]
    out["solver"] = [SolverSetting.of(row).label for row in table[list(SETTING_FIELDS)].to_dict("records")]
    if table["dequant_draws"].nunique() > 1:
        out["K"] = table["dequant_draws"]
    for f in shown_value_fields():  # from EvalRow's value fields: a new one is a new column
        header = value_label(f, table)
        if header is not None and (f.metadata.get("always") or table[f"{f.name}_mean"].notna().any()):
            out[header] = _cells(table, f.name)
    out["seeds"] = table["seeds"]
    if int(table["failed"].sum()):
        out["failed"] = table["failed"]
    return out


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table, without the optional `tabulate` dependency."""
    shown = display_table(table)
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "| " + " | ".join("---" for _ in shown.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body])
