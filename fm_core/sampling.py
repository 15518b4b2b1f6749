"""ODE integration through torchdiffeq with exact function-evaluation counts.

Fixed-step solvers are driven by an NFE budget: steps = budget // stages, on a uniform grid that
we build ourselves (torchdiffeq's own step_size grid can gain a step from rounding, which would
make the reported NFE lie).  Adaptive solvers take atol/rtol.  Every call returns the number of
times the vector field was actually evaluated, counted in the field wrapper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchdiffeq import odeint

from fm_core.names import FIXED_STAGES
from fm_core.solvers import SolverSetting

__all__ = ["FIXED_STAGES", "SolverSetting", "Solution", "odeint_counted", "sample"]


class CountingField(torch.nn.Module):
    """Wraps f(t, x) and counts its evaluations; torchdiffeq sees an ordinary callable."""

    def __init__(self, field: Callable[[Tensor, Tensor], object]) -> None:
        super().__init__()
        self.field = field
        self.nfe = 0

    def forward(self, t: Tensor, x: object) -> object:
        self.nfe += 1
        return self.field(t, x)


@dataclass
class Solution:
    """End state (and optional states at requested times) plus the exact NFE used."""

    x: Tensor
    nfe: int
    trajectory: Tensor | None = None


def odeint_counted(
    field: Callable[[Tensor, object], object],
    state: object,
    t0: float,
    t1: float,
    solver: SolverSetting,
    t_eval: Sequence[float] | None = None,
) -> tuple[object, int]:
    """Integrate `state` (a tensor or tuple of tensors) from t0 to t1; returns (states, nfe).

    With t_eval, states are returned at those times (which must start at t0 and end at t1).
    """
    ref = state[0] if isinstance(state, tuple) else state
    times = [t0, t1] if t_eval is None else list(t_eval)
    if abs(times[0] - t0) > 1e-12 or abs(times[-1] - t1) > 1e-12:
        raise ValueError("t_eval must start at t0 and end at t1")
    t = torch.tensor(times, dtype=ref.dtype, device=ref.device)
    counted = CountingField(field)
    options: dict[str, object] = {}
    kwargs: dict[str, object] = {}
    if solver.nfe_budget is not None:
        steps = solver.steps
        grid = torch.linspace(t0, t1, steps + 1, dtype=ref.dtype, device=ref.device)
        options["grid_constructor"] = lambda _f, _y0, _t: grid
    else:
        kwargs = {"atol": solver.atol, "rtol": solver.rtol}
    out = odeint(counted, state, t, method=solver.solver, options=options, **kwargs)
    return out, counted.nfe


def sample(
    field: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    solver: SolverSetting,
    t_span: tuple[float, float] = (0.0, 1.0),
    t_eval: Sequence[float] | None = None,
) -> Solution:
    """Push noise x0 along dx/dt = field(t, x) from t_span[0] to t_span[1] (no gradients)."""
    with torch.no_grad():
        out, nfe = odeint_counted(field, x0, t_span[0], t_span[1], solver, t_eval)
    assert isinstance(out, Tensor)
    return Solution(x=out[-1], nfe=nfe, trajectory=out if t_eval is not None else None)
