"""ODE integration through torchdiffeq with exact function-evaluation counts.

Fixed-step solvers are driven by an NFE budget: steps = budget // stages, on a uniform grid that
we build ourselves (torchdiffeq's own step_size grid can gain a step from rounding, which would
make the reported NFE lie).  Adaptive solvers take atol/rtol.  Every call returns the number of
times the vector field was actually evaluated, counted in the field wrapper.

`sample(..., energy=True)` also integrates each sample's kinetic energy, the integral of ||v(x_t, t)||^2 dt along
its own trajectory, as one more component of the ODE state: the solver combines the ||v||^2 of the very stage
evaluations it makes for x with its own quadrature weights, so it costs no network evaluation, and the step
control of adaptive solvers reads x alone (`_first_rms`), so the steps, the NFE and the samples are those of the
solve without it. fm_core.path_measures turns it into straightness and path energy.
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
    """End state (and optional states at requested times) plus the exact NFE used; with `energy`, each
    sample's integral of ||v||^2 dt over the solve (shape (N,))."""

    x: Tensor
    nfe: int
    trajectory: Tensor | None = None
    energy: Tensor | None = None


def _first_rms(state: tuple[Tensor, ...]) -> Tensor:
    """torchdiffeq's RMS error norm of a plain tensor state, over the first tensor of a tuple only: the added
    components then steer no step (same expression as torchdiffeq's `_rms_norm`, so the same steps)."""
    return state[0].abs().pow(2).mean().sqrt()


def _with_energy(field: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, tuple[Tensor, Tensor]], tuple[Tensor, Tensor]]:
    """d/dt (x, e) = (v, ||v||^2 per sample): e integrates the kinetic energy from the same evaluation of v."""

    def augmented(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, e = state
        v = field(t, x)
        return v, v.to(e.dtype).pow(2).flatten(1).sum(1)

    return augmented


def odeint_counted(
    field: Callable[[Tensor, object], object],
    state: object,
    t0: float,
    t1: float,
    solver: SolverSetting,
    t_eval: Sequence[float] | None = None,
    control_first: bool = False,
) -> tuple[object, int]:
    """Integrate `state` (a tensor or tuple of tensors) from t0 to t1; returns (states, nfe).

    With t_eval, states are returned at those times (which must start at t0 and end at t1). With
    `control_first`, an adaptive solver's error control reads only the first tensor of a tuple state.
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
        if control_first:
            options["norm"] = _first_rms
    out = odeint(counted, state, t, method=solver.solver, options=options, **kwargs)
    return out, counted.nfe


def sample(
    field: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    solver: SolverSetting,
    t_span: tuple[float, float] = (0.0, 1.0),
    t_eval: Sequence[float] | None = None,
    energy: bool = False,
) -> Solution:
    """Push noise x0 along dx/dt = field(t, x) from t_span[0] to t_span[1] (no gradients); with `energy`,
    also each sample's integral of ||v||^2 dt (the module's docstring: no extra evaluation, same steps)."""
    with torch.no_grad():
        if not energy:
            out, nfe = odeint_counted(field, x0, t_span[0], t_span[1], solver, t_eval)
            assert isinstance(out, Tensor)
            return Solution(x=out[-1], nfe=nfe, trajectory=out if t_eval is not None else None)
        e0 = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        (xs, es), nfe = odeint_counted(_with_energy(field), (x0, e0), t_span[0], t_span[1], solver, t_eval, True)  # type: ignore[misc]
    return Solution(x=xs[-1], nfe=nfe, trajectory=xs if t_eval is not None else None, energy=es[-1])
