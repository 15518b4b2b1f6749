"""A method's one name, as the paper's tables and the CLI say it (FM-OT, SM-VP +mbOT), beside the objective's label
it is made of: the evaluation row (its child run's `method` param) and the tables both read it from here."""

from __future__ import annotations

from fm_core.couplings import COUPLINGS
from fm_core.objectives import objective_label


def method_label(path: str, objective: str, coupling: str, train_axes: str | None = None) -> str:
    """The paper's row names: FM-OT, FM-VP, SM-VP, ...; a coupling other than the paper's adds its label
    (`FM-OT +mbOT`, `FM-OT +Sinkhorn`), and a sweep with training-option axes their values: `FM-OT [ema_decay=0.999]`."""
    label = f"{objective_label(objective)}-{path.upper()}"
    mark = COUPLINGS[coupling].label if coupling in COUPLINGS else ""
    label += f" {mark}" if mark else ""
    return label + (f" [{train_axes}]" if isinstance(train_axes, str) and train_axes else "")
