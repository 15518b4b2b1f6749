"""The evaluation row: one typed record per (training, solver setting, checkpoint step, dequantization K).

Everything that shows a result derives from this one class, torch-free: the Parquet columns and their dtypes
(`parquet_dtypes`), the MLflow child run of each evaluation (`child_params`, `child_metrics`, `child_name`),
the tables' grouping and value columns (`columns_with_role`), the report. A field's role says where it goes:

- `method`: what was trained (the table's row labels; child params);
- `seed`: averaged over in tables (a child param);
- `setting`: how the checkpoint was evaluated (table groups; child params);
- `value`: what was measured (mean/std in tables; child metrics; `fmx compare --metric`; the comparison view);
- `protocol`: how a value was measured (units, the likelihood's solver and estimator; shared per group);
- `trial`: the trial's bookkeeping (timings, node, status).

A new measured quantity is one `value` field here (and the code that computes it): e.g.
`sample_spread: float = _col("float64", "value", math.nan, mlflow="metric", label="sample spread")`. Its
optional keys say how it is shown: `metric` (a function of the row giving its child metric's name, None: not
logged; default the field's name), `label` (its table header, or a function of the summary table giving it,
None: no column; default the field's name), `always` (a table column even where no group measured it) and
`kind` (`quality`, the default; `cost`; `check`: shown after the others, and not a result in the comparison
view's chart), `positive` (never below 0: its intervals and comparisons are taken on the log scale,
orchestrator.stats), `per_checkpoint` (a function of the row: true where the value is measured once per
checkpoint, the same under every solver setting, so `fmx compare` compares it once) and `late` (logged after the
row-named metrics, so that the comparison view's chart keeps NFE, the likelihood and the sample metric as its
value axes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fm_core.checks import short_repr
from fm_core.likelihood import PER_SAMPLE_SOLVER
from fm_core.method_names import method_label
from fm_core.solvers import SOLVER_FIELDS, SolverSetting, tol_text

#: What a child run's params show where a setting does not apply (tol of a fixed-step solver): every child
#: carries the same param names, so the runs table's columns and groups line up.
NOT_APPLICABLE = "none"
# The solver setting's label as one more child param: tol is "none" for fixed-step solvers and nfe_budget for
# adaptive ones, so neither tells every evaluation's setting by itself (to group or plot by); the label does.
SETTING_PARAM = "setting"
#: The method's label (FM-OT, as the CLI and the tables say it) as one more child param, first: the MLflow UI
#: groups and colours evaluations by it instead of by three params a reader has to put together.
METHOD_PARAM = "method"
#: The MLflow metric each unit's likelihood is logged under; one name per unit in every child of a sweep.
NLL_METRIC = {"nats": "nll_nats", "bits/dim": "bits_per_dim"}
#: Significant digits of the metrics child runs show; evaluations.json and Parquet keep every digit.
METRIC_DIGITS = 4


#: The kinds of value, in the order tables show them: what the model is worth, what it cost, checks on the solve.
VALUE_KINDS = ("quality", "cost", "check")


def _col(dtype: str, role: str, default: Any = None, mlflow: str | None = None, **shown: Any) -> Any:
    """A row field with its Parquet dtype, its role, whether it is an MLflow child 'param' or 'metric', and
    how a value is shown (`metric`, `label`, `always`, `kind`: the module's docstring)."""
    return field(default=default, metadata={"dtype": dtype, "role": role, "mlflow": mlflow, **shown})


def _nll_metric(row: EvalRow) -> str | None:
    """The likelihood under its unit's name, `_sample_solver` when integrated with the sample solver."""
    if not row.nll_unit:
        return None
    return NLL_METRIC.get(row.nll_unit, "nll") + ("_sample_solver" if row.nll_protocol == PER_SAMPLE_SOLVER else "")


def _sample_metric(row: EvalRow) -> str | None:
    """The sample metric under its own name (sliced_w2, classifier_fd)."""
    return row.sample_metric_name or None


def _nll_per_checkpoint(row: EvalRow) -> bool:
    """The likelihood is integrated once per checkpoint (eval.likelihood), unless with each sample solver."""
    return row.nll_protocol != PER_SAMPLE_SOLVER


def _strings(column: Iterable[Any]) -> list[str]:
    return [v for v in column if isinstance(v, str)]


def _nll_label(table: Any) -> str:
    """Says how the likelihood was integrated: with one solver for every row (its label), or with each row's."""
    unit = next(iter(_strings(table["nll_unit"])), None)
    if not unit:
        return "NLL"
    if set(_strings(table["nll_protocol"])) == {PER_SAMPLE_SOLVER}:
        return f"NLL ({unit}, at each sample solver)"
    solvers = sorted(set(_strings(table["nll_solver"])))
    return f"NLL ({unit}, {', '.join(solvers)})" if solvers else f"NLL ({unit})"


def _sample_label(table: Any) -> str | None:
    """The sample metric's name; no column where the sweep measured none."""
    return next(iter(_strings(table["sample_metric_name"])), None) or None


@dataclass(frozen=True)
class EvalRow:
    """One evaluation of one trained checkpoint (NaN / None where a quantity was not measured)."""

    # What was trained: the same in every row of a trial.
    sweep: str | None = _col("string", "trial")
    trial_id: str | None = _col("string", "trial")
    cell: str | None = _col("string", "trial")  # the training's content key (orchestrator.cells)
    eval_digest: str | None = _col("string", "trial")  # the key of the evaluation settings it was evaluated with
    dataset: str | None = _col("string", "method")
    model: str | None = _col("string", "method")
    path: str | None = _col("string", "method", mlflow="param")
    objective: str | None = _col("string", "method", mlflow="param")
    coupling: str | None = _col("string", "method", mlflow="param")
    train_axes: str | None = _col("string", "method", mlflow="param")  # grid.train values: `lr=0.001 ema_decay=0.999`
    seed: int | None = _col("Int64", "seed", mlflow="param")
    # How it was evaluated.
    train_step: int | None = _col("Int64", "setting", mlflow="param")
    solver: str | None = _col("string", "setting", mlflow="param")
    tol: float | None = _col("float64", "setting", mlflow="param")
    nfe_budget: int | None = _col("Int64", "setting", mlflow="param")
    cfg_scale: float | None = _col("float64", "setting", mlflow="param")  # classifier-free guidance scale
    dequant_draws: int | None = _col("Int64", "setting", mlflow="param")
    weights: str = _col("string", "setting", "model", mlflow="param")
    # What was measured.
    nfe: int | None = _col("Int64", "value", mlflow="metric", label="NFE", always=True, kind="cost", positive=True)
    nll: float = _col("float64", "value", math.nan, mlflow="metric", metric=_nll_metric, label=_nll_label, always=True,
                      per_checkpoint=_nll_per_checkpoint)  # fmt: skip
    sample_metric: float = _col("float64", "value", math.nan, mlflow="metric", metric=_sample_metric, label=_sample_label,
                                always=True, positive=True)  # fmt: skip
    fid: float = _col("float64", "value", math.nan, mlflow="metric", label="FID", positive=True)  # eval.fid: fm_core.fid's protocol
    # The model's own sampling paths, on time [0, 1] (fm_core.path_measures; docs/path_measures.md): Liu et al.'s
    # straightness, integral of E ||(X1 - X0) - v(Xt, t)||^2 dt (0: straight lines), and the path energy
    # integral of E ||v(Xt, t)||^2 dt, both from the sample solve's own evaluations.
    straightness: float = _col("float64", "value", math.nan, mlflow="metric", late=True)
    path_energy: float = _col("float64", "value", math.nan, mlflow="metric", late=True, label="path energy", positive=True)
    # eval.per_sample_nfe (adaptive solvers): the NFE of that many samples each solved alone, under its own
    # step control, beside `nfe` (the batch's); and how far those solves land from the batch's (max |difference|).
    nfe_sample_mean: float = _col("float64", "value", math.nan, mlflow="metric", late=True, label="NFE/sample mean",
                              kind="cost", positive=True)  # fmt: skip
    nfe_sample_median: float = _col("float64", "value", math.nan, mlflow="metric", late=True, label="NFE/sample median",
                                kind="cost", positive=True)  # fmt: skip
    nfe_sample_p90: float = _col("float64", "value", math.nan, mlflow="metric", late=True, label="NFE/sample p90",
                             kind="cost", positive=True)  # fmt: skip
    per_sample_gap: float = _col("float64", "value", math.nan, mlflow="metric", label="per-sample gap", kind="check")
    ode_error: float = _col("float64", "value", math.nan, mlflow="metric", label="ODE error", kind="check", positive=True)
    # How it was measured.
    nll_unit: str | None = _col("string", "protocol")
    nll_protocol: str | None = _col("string", "protocol")
    nll_solver: str | None = _col("string", "protocol")
    nll_nfe: int | None = _col("Int64", "protocol", mlflow="metric")
    nll_divergence: str | None = _col("string", "protocol")
    nll_probe: str | None = _col("string", "protocol")
    nll_points: int | None = _col("Int64", "protocol")
    sample_metric_name: str | None = _col("string", "protocol")
    fid_samples: int | None = _col("Int64", "protocol")
    fid_reference: str | None = _col("string", "protocol")  # the split (train), or the statistics file's name
    fid_reference_digest: str | None = _col("string", "protocol")  # of the reference's mu and sigma
    fid_detector_sha256: str | None = _col("string", "protocol")
    fid_protocol: str | None = _col("string", "protocol")
    eval_seconds: float = _col("float64", "trial", 0.0, mlflow="metric")
    status: str = _col("string", "trial", "ok")
    error: str | None = _col("string", "trial")
    # The trial's totals and bookkeeping (filled in when the trial's record is written).
    train_steps: int = _col("Int64", "trial", 0)
    train_seconds: float = _col("float64", "trial", 0.0)
    compute_seconds: float = _col("float64", "trial", 0.0)
    node_id: str | None = _col("string", "trial")
    resumed_from_step: int = _col("Int64", "trial", 0)
    # How it was trained: batch_size is the global batch, split over world_size workers and grad_accum steps.
    global_batch: int | None = _col("Int64", "trial")
    worker_batch: int | None = _col("Int64", "trial")
    world_size: int | None = _col("Int64", "trial")
    grad_accum: int | None = _col("Int64", "trial")
    precision: str | None = _col("string", "trial")
    device: str | None = _col("string", "trial")
    trial_started_at: float | None = _col("float64", "trial")
    trial_seconds: float | None = _col("float64", "trial")
    mlflow_run_id: str | None = _col("string", "trial")

    # --- building and reading back ---------------------------------------------------------------

    @classmethod
    def of(cls, setting: SolverSetting, step: int, **values: Any) -> EvalRow:
        return cls(train_step=step, **setting.as_dict(), **values)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalRow:
        """A row from JSON (record.json, evaluations.json); keys it does not know (an older layout) are dropped.
        Every value must be of its column's type (ValueError naming the field): the files come from storage and
        a store that anyone can edit, and a value of another type would surface as a traceback far from here."""
        return cls(**{f.name: _typed(f, data[f.name]) for f in FIELDS if f.name in data})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **values: Any) -> EvalRow:
        return dataclasses.replace(self, **values)

    @property
    def setting(self) -> SolverSetting:
        return SolverSetting.of(self.as_dict())

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    # --- MLflow: one child run per evaluation --------------------------------------------------

    @property
    def evaluation_key(self) -> str:
        """Identifies the evaluation within its training cell: found again on resume and by later passes, so
        children are never doubled; other evaluation settings (`eval_digest`) make another evaluation."""
        parts = ([self.eval_digest] if self.eval_digest else []) + [f"step{self.train_step}", self.setting.label, self.weights]
        if self.dequant_draws is not None:
            parts.append(f"k{self.dequant_draws}")
        return "/".join(parts)

    def child_name(self) -> str:
        """`ot-fm-independent-s0 · dopri5_tol1e-05 · step 2000` (and `· K 4` for several dequantizations)."""
        name = f"{self.trial_id} · {self.setting.label} · step {self.train_step}"
        return name + (f" · K {self.dequant_draws}" if self.dequant_draws is not None else "")

    def child_params(self) -> dict[str, str]:
        """The same names in every child: the method's label first (`METHOD_PARAM`), tolerances spelled as in
        labels, 'none' where a field does not apply, and the setting's label (`SETTING_PARAM`)."""
        out: dict[str, str] = {}
        if self.path is not None and self.objective is not None and self.coupling is not None:
            out[METHOD_PARAM] = method_label(self.path, self.objective, self.coupling, self.train_axes)
        for f in FIELDS:
            if f.metadata["mlflow"] != "param":
                continue
            value = getattr(self, f.name)
            if value is None:
                out[f.name] = NOT_APPLICABLE
            elif f.name == "tol":
                out[f.name] = tol_text(float(value))
            else:
                out[f.name] = str(value)
            if f.name == SOLVER_FIELDS[-1] and self.solver is not None:  # one categorical axis for every solver
                out[SETTING_PARAM] = self.setting.label
        return out

    def metric_fields(self) -> dict[str, dataclasses.Field]:
        """Child metric name -> the field it is logged from, for every `mlflow="metric"` field this row names:
        those under their own name first (nfe, ode_error, nll_nfe, eval_seconds), then those the row names
        (the likelihood under its unit's name, the sample metric under its own) and the `late` ones
        (straightness, ...), each in the row's order."""
        own = [(f.name, f) for f in METRIC_FIELDS if "metric" not in f.metadata and not f.metadata.get("late")]
        named = [(f.metadata["metric"](self) if "metric" in f.metadata else f.name, f) for f in METRIC_FIELDS
                 if "metric" in f.metadata or f.metadata.get("late")]  # fmt: skip
        return {name: f for name, f in own + named if name}

    def child_metrics(self) -> dict[str, float]:
        """Every metric field's value under its name (`metric_fields`), absent where not measured, rounded to
        METRIC_DIGITS so that the runs table reads at a glance."""
        named = {name: getattr(self, f.name) for name, f in self.metric_fields().items()}
        return {k: _readable(float(v)) for k, v in named.items() if v is not None and math.isfinite(float(v))}


#: What a column's values may be, by its Parquet dtype (None is every column's missing value).
_COLUMN_TYPES = {"string": "a string", "Int64": "an integer", "float64": "a number (finite or NaN)"}


def _typed(f: dataclasses.Field, value: Any) -> Any:
    """`value` where it is of the field's column type (ints as floats for float columns), else ValueError."""
    dtype = f.metadata["dtype"]
    if value is None:
        return None
    if dtype == "string" and isinstance(value, str):
        return value
    if dtype == "Int64" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if dtype == "float64" and isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isinf(value):
        return float(value)
    raise ValueError(f"field '{f.name}' holds {short_repr(value)}, not {_COLUMN_TYPES[dtype]}")


def _readable(value: float) -> float:
    """Four significant digits: what a runs table can show at a glance (the rows keep full precision)."""
    return float(f"{value:.{METRIC_DIGITS}g}")


FIELDS: tuple[dataclasses.Field, ...] = dataclasses.fields(EvalRow)
FIELD_NAMES: frozenset[str] = frozenset(f.name for f in FIELDS)
METRIC_FIELDS: tuple[dataclasses.Field, ...] = tuple(f for f in FIELDS if f.metadata["mlflow"] == "metric")
#: What was measured: the tables' value columns, `fmx compare --metric`'s choices.
VALUE_FIELDS: tuple[dataclasses.Field, ...] = tuple(f for f in FIELDS if f.metadata["role"] == "value")
VALUE_BY_NAME: dict[str, dataclasses.Field] = {f.name: f for f in VALUE_FIELDS}


def value_kind(f: dataclasses.Field) -> str:
    return f.metadata.get("kind", "quality")


def is_result(f: dataclasses.Field) -> bool:
    """A value that says what a method is worth or costs (not a check on the solve, a protocol or a timing)."""
    return f.metadata["role"] == "value" and value_kind(f) != "check"


def shown_value_fields() -> list[dataclasses.Field]:
    """The value fields in the order tables show them: by kind (VALUE_KINDS), then in the row's order."""
    return sorted(VALUE_FIELDS, key=lambda f: VALUE_KINDS.index(value_kind(f)))


def is_positive(name: str) -> bool:
    """Whether value field `name` is never below 0 (its `positive` key)."""
    return bool(VALUE_BY_NAME[name].metadata.get("positive"))


def value_label(f: dataclasses.Field, table: Any) -> str | None:
    """A value's table header over a summary table (None: no column)."""
    label = f.metadata.get("label", f.name)
    return label(table) if callable(label) else label


#: The child metrics that are not results (checks, protocol, timings): each is logged under its own name.
SIDE_METRICS: tuple[str, ...] = tuple(f.name for f in METRIC_FIELDS if not is_result(f) and "metric" not in f.metadata)


def columns_with_role(*roles: str) -> list[str]:
    """The row's columns of these roles, in the row's order."""
    return [f.name for f in FIELDS if f.metadata["role"] in roles]


def parquet_columns() -> list[str]:
    return [f.name for f in FIELDS]


def parquet_dtypes() -> dict[str, str]:
    return {f.name: f.metadata["dtype"] for f in FIELDS}


def rows_from_dicts(items: Iterable[Mapping[str, Any]]) -> list[EvalRow]:
    return [EvalRow.from_dict(item) for item in items]
