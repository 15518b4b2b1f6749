"""How straight a model's own sampling paths are, from the solve that draws the samples (no extra evaluation).

Both measures put time on [0, 1] (s = t / T for a path that ends at t_max = T, dZ/ds = T v), so that paths of
every schedule compare:

- path energy (Tong et al. 2023, before their normalisation by W2^2): E || dZ/ds ||^2 integrated over s,
  = T * integral over [0, T] of ||v(x_t, t)||^2 dt;
- straightness (Liu et al. 2022, Rectified Flow): the integral over s of E || (Z_1 - Z_0) - dZ/ds ||^2, which is 0
  exactly when every path is a straight line run at constant speed.

Since the integral of dZ/ds is Z_1 - Z_0, straightness = path energy - E ||Z_1 - Z_0||^2: both come from the
endpoints and the per-sample kinetic energy that `fm_core.sampling.sample(..., energy=True)` integrates with
the solver's own stages and weights. For a Runge-Kutta solve this identity holds for the discrete solve too
(the same weights make x_1 - x_0 and the energy), so the value is the solver's quadrature of Liu's integral.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class PathMeasures:
    """Per-sample straightness and path energy (shape (N,), float64)."""

    straightness: Tensor
    path_energy: Tensor


def path_measures(x0: Tensor, x1: Tensor, energy: Tensor, duration: float) -> PathMeasures:
    """From a solve's start x0, end x1 and each sample's integral of ||v||^2 dt over a span of `duration`."""
    displacement = (x1.double() - x0.double()).flatten(1).pow(2).sum(1)
    path_energy = duration * energy.double()
    return PathMeasures(straightness=path_energy - displacement, path_energy=path_energy)
