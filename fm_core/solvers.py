"""The one solver-setting type: what sampling integrates with, what a sweep plans, what rows and MLflow name.

Torch-free, so that validation, planning, tables and the MLflow layout share it with the ODE code without
importing PyTorch. Its `label` is the only spelling of a setting anywhere (metric names, table cells, plot
titles, sample artifacts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from fm_core.names import ADAPTIVE_SOLVERS, FIXED_STAGES, SOLVER_NAMES


#: The paper's tolerance: dopri5 at atol = rtol = 1e-5 for the likelihood, and an adaptive solver's default.
DEFAULT_TOL = 1e-5


def tol_text(tol: float) -> str:
    """The shortest scientific form that reads back as exactly `tol` (1e-05, 1.4e-04): distinct tolerances
    get distinct labels, where a fixed precision would put 1e-4 and 1.4e-4 in one."""
    for digits in range(16):
        text = f"{tol:.{digits}e}"
        if float(text) == tol:
            return text
    return f"{tol:.16e}"  # 17 significant digits read back as any double


def _absent(value: Any) -> bool:
    """None, NaN (a float Parquet column) or pandas' NA (an Int64 one): no value."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:  # pandas.NA refuses to be a bool
        return True


@dataclass(frozen=True)
class SolverSetting:
    """A fixed-step method at an NFE budget, or an adaptive one at a tolerance (atol = rtol = tol)."""

    solver: str = "dopri5"
    tol: float | None = None
    nfe_budget: int | None = None
    #: Classifier-free guidance scale of a class-conditional model (fm_core.guidance); None: no guidance.
    #: Not the solver's, but how the field it integrates is made: part of the evaluation setting and its label.
    cfg_scale: float | None = field(default=None, metadata={"solver": False})

    def __post_init__(self) -> None:
        if self.cfg_scale is not None and not (self.cfg_scale >= 0 and self.cfg_scale < float("inf")):
            raise ValueError(f"a guidance scale must be a finite number >= 0, got {self.cfg_scale}")
        if self.solver in FIXED_STAGES:
            stages = FIXED_STAGES[self.solver]
            if self.tol is not None:
                raise ValueError(f"solver '{self.solver}' is fixed-step: it takes an NFE budget, not a tolerance")
            if self.nfe_budget is None or self.nfe_budget < stages:
                raise ValueError(
                    f"solver '{self.solver}' needs an NFE budget of at least {stages} (its evaluations per step),"
                    f" got {self.nfe_budget}"
                )
        elif self.solver in ADAPTIVE_SOLVERS:
            if self.nfe_budget is not None:
                raise ValueError(f"solver '{self.solver}' is adaptive: it takes a tolerance, not an NFE budget")
            if self.tol is None or not self.tol > 0:
                raise ValueError(f"solver '{self.solver}' needs a positive tolerance, got {self.tol}")
        else:
            raise ValueError(f"unknown solver '{self.solver}'; choose one of {', '.join(SOLVER_NAMES)}")

    @classmethod
    def adaptive(cls, solver: str = "dopri5", tol: float = DEFAULT_TOL) -> SolverSetting:
        return cls(solver, tol=tol)

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> SolverSetting:
        """The setting a row (or a dict with SETTING_FIELDS' keys) was evaluated with."""
        tol, budget, scale = (row.get(k) for k in ("tol", "nfe_budget", "cfg_scale"))
        return cls(str(row["solver"]), tol=None if _absent(tol) else float(tol), nfe_budget=None if _absent(budget) else int(budget),
                   cfg_scale=None if _absent(scale) else float(scale))  # fmt: skip

    @property
    def is_adaptive(self) -> bool:
        return self.tol is not None

    @property
    def atol(self) -> float | None:
        return self.tol

    @property
    def rtol(self) -> float | None:
        return self.tol

    @property
    def steps(self) -> int | None:
        """Steps of a fixed-grid solve (the budget rounded down to whole steps)."""
        return None if self.nfe_budget is None else self.nfe_budget // FIXED_STAGES[self.solver]

    @property
    def label(self) -> str:
        """`dopri5_tol1e-05`, `dopri5_tol1.4e-04`, `euler_nfe8`, `rk4_nfe20_cfg2` (guidance scale 2): safe in
        MLflow metric names, one per value."""
        base = f"{self.solver}_tol{tol_text(self.tol)}" if self.tol is not None else f"{self.solver}_nfe{self.nfe_budget}"
        return base if self.cfg_scale is None else f"{base}_cfg{self.cfg_scale:g}"

    def with_guidance(self, scale: float | None) -> SolverSetting:
        return SolverSetting(self.solver, self.tol, self.nfe_budget, scale)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SETTING_FIELDS}


#: A setting's fields, in order: the columns of rows, tables and MLflow params that name one (solver first).
SETTING_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SolverSetting))
#: Those of the solver itself (not the guidance scale, which makes the field it integrates): the comparison
#: view puts them beside the method, and the setting's label follows them among a child run's params.
SOLVER_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SolverSetting) if f.metadata.get("solver", True))
