"""`fmx compare`: two methods of a sweep, paired by seed, in every evaluation cell both were measured in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from fm_core.solvers import SETTING_FIELDS, SolverSetting
from orchestrator.rows import VALUE_BY_NAME, EvalRow, is_positive, value_label
from orchestrator.errors import CompareError
from orchestrator.stats import Comparison, paired_comparison
from orchestrator.tables import PROTOCOL_COLUMNS, VALUE_COLUMNS, method_label

METHOD_COLUMNS = ["path", "objective", "coupling", "train_axes"]
#: What makes two rows the same evaluation cell, apart from the method and the seed.
CELL_COLUMNS = ["train_step", *SETTING_FIELDS, "dequant_draws"]
#: The same, for a value measured once per checkpoint (the likelihood): the solver setting does not enter.
CHECKPOINT_COLUMNS = ["train_step", "dequant_draws"]
#: The setting a value measured once per checkpoint is compared under: every one, as one.
EVERY_SETTING = "every setting (one value per checkpoint)"


@dataclass(frozen=True)
class CellComparison:
    step: int
    setting: str
    dequant_draws: int | None
    comparison: Comparison


Method = tuple[str, str, str, Any]  # path, objective, coupling, train_axes (None without grid.train)


def methods_of(runs: pd.DataFrame) -> dict[str, Method]:
    """Every name a method answers to: its label (FM-OT, SM-VP +mbOT, FM-OT [lr=0.001]) and its key
    (ot-fm-independent); a short name that several training-option variants share names none of them."""
    names: dict[str, Method] = {}
    shared: set[str] = set()
    for row in runs[METHOD_COLUMNS].drop_duplicates().itertuples(index=False):
        path, objective, coupling, axes = row
        method = (path, objective, coupling, None if pd.isna(axes) else axes)
        names[method_label(*method).lower()] = method
        short = [method_label(path, objective, coupling).lower(), f"{path}-{objective}-{coupling}"]
        short += [f"{path}-{objective}"] if coupling == "independent" else []
        for name in short:
            if name in names and names[name] != method:
                shared.add(name)
            names.setdefault(name, method)
    return {k: v for k, v in names.items() if k not in shared}


def resolve_method(runs: pd.DataFrame, name: str) -> Method:
    names = methods_of(runs)
    found = names.get(name.lower())
    if found is None:
        labels = sorted({method_label(*m) for m in names.values()})
        raise CompareError(f"no method '{name}' in this sweep; it has {', '.join(labels)}")
    return found


def metric_columns(runs: pd.DataFrame) -> dict[str, str]:
    """What `--metric` accepts (matched without regard to case), and the column each names: every value column
    (EvalRow's value fields) by its own name, by the name its child runs log it under in this sweep
    (bits_per_dim, sliced_w2), and by the header the sweep's tables show it under (NFE, ODE error,
    NLL (nats, dopri5_tol1e-05), and that header's short form before the parenthesis)."""
    names = {c: c for c in VALUE_COLUMNS}
    for row in _protocols(runs):
        names.update({name: f.name for name, f in row.metric_fields().items() if f.name in VALUE_COLUMNS})
    for column in VALUE_COLUMNS:
        header = value_label(VALUE_BY_NAME[column], runs)
        if header:
            names.setdefault(header, column)
            names.setdefault(header.split(" (")[0], column)
    return names


def _protocols(runs: pd.DataFrame) -> list[EvalRow]:
    """One row per distinct way the sweep's values were measured (units, metric names, likelihood protocol)."""
    frame = runs[[c for c in PROTOCOL_COLUMNS if c in runs]].drop_duplicates()
    return [EvalRow.from_dict({k: None if pd.isna(v) else v for k, v in p.items()}) for p in frame.to_dict("records")]


def once_per_checkpoint(runs: pd.DataFrame, column: str) -> bool:
    """Whether every row measured `column` once per checkpoint (its field's `per_checkpoint`), so that its
    value is the same under every solver setting and is compared once, not once per setting."""
    per_checkpoint = VALUE_BY_NAME[column].metadata.get("per_checkpoint")
    return per_checkpoint is not None and all(per_checkpoint(row) for row in _protocols(runs))


def compare_methods(runs: pd.DataFrame, a: str, b: str, metric: str, margin: float | None = None) -> list[CellComparison]:
    """A minus B on `metric` (metric_columns' names) in each cell (step, solver setting, K) both methods have,
    paired by seed; a value measured once per checkpoint, in each (step, K) only. Positive values are judged
    on the log scale, and `margin` adds the equivalence test (orchestrator.stats)."""
    columns = {name.lower(): column for name, column in metric_columns(runs).items()}
    if metric.lower() not in columns:
        raise CompareError(f"--metric: '{metric}' is not one of {', '.join(metric_columns(runs))}")
    metric = columns[metric.lower()]
    ok = runs[runs["status"] == "ok"]
    method_a, method_b = resolve_method(runs, a), resolve_method(runs, b)
    if method_a == method_b:
        raise CompareError(f"'{a}' and '{b}' are the same method")
    once = once_per_checkpoint(ok, metric)
    out: list[CellComparison] = []
    for cell, rows in ok.groupby(CHECKPOINT_COLUMNS if once else CELL_COLUMNS, dropna=False, sort=True):
        values = {}
        for method in (method_a, method_b):
            mine = rows[(rows[METHOD_COLUMNS].fillna("") == pd.Series(method, index=METHOD_COLUMNS).fillna("")).all(axis=1)]
            mine = mine[mine[metric].notna()].drop_duplicates("seed")  # once per checkpoint: every setting's row holds it
            values[method] = dict(zip(mine["seed"].astype(int), mine[metric].astype("float64"), strict=True))
        if not values[method_a] or not values[method_b]:
            continue
        where = dict(zip(CHECKPOINT_COLUMNS if once else CELL_COLUMNS, cell, strict=True))
        step, draws = where["train_step"], where["dequant_draws"]
        setting = EVERY_SETTING if once else SolverSetting.of(where).label
        comparison = paired_comparison(values[method_a], values[method_b], positive=is_positive(metric), margin=margin)
        out.append(CellComparison(int(step), setting, None if pd.isna(draws) else int(draws), comparison))
    return out

