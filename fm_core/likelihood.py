"""Log-likelihood by the instantaneous change of variables (Chen et al., 2018; paper App. C).

Integrating the augmented state (x, l) with dx/dt = v_t(x) and dl/dt = div v_t(x) from the data
end t1 (l = 0) back to the noise end t = 0 gives

    log p_1(x1) = log p_0(x(0)) + l(0),

exactly up to the solver's error.  The divergence is the exact trace of the Jacobian (one
vector-Jacobian product per dimension: cheap for 2D) or Hutchinson's unbiased estimate
z^T (dv/dx) z with one fixed probe per solve (one product, for images).

Like fm_core.paths, this module imports PyTorch (and the ODE code of fm_core.sampling) at first use, not at
import: sweep validation reads the divergences, probes and likelihood protocols from here without PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fm_core.lazy import LazyModule, torch

if TYPE_CHECKING:
    from torch import Tensor

    from fm_core.solvers import SolverSetting

#: fm_core.sampling imports torchdiffeq and PyTorch: imported at the first likelihood computed.
sampling = LazyModule("fm_core.sampling")

#: The likelihood protocols: integrated once per checkpoint with one solver (`shared`), or with each sample
#: solver (`per_sample_solver`, which is also how a sweep's `eval.likelihood.solver` asks for it).
SHARED, PER_SAMPLE_SOLVER = "shared", "per_sample_solver"
LIKELIHOOD_PROTOCOLS: tuple[str, ...] = (SHARED, PER_SAMPLE_SOLVER)
#: How the divergence is computed: the exact trace, or Hutchinson's estimate with one probe.
DIVERGENCES: tuple[str, ...] = ("exact", "hutchinson")
#: `divergence: auto` is exact up to this many dimensions (d backward passes per step stay cheap) and a
#: Hutchinson estimate above (one pass per probe).
EXACT_DIVERGENCE_MAX_DIM = 16


def auto_divergence(dim: int) -> str:
    """The divergence `auto` picks for data of `dim` dimensions."""
    return "exact" if dim <= EXACT_DIVERGENCE_MAX_DIM else "hutchinson"
PROBES: tuple[str, ...] = ("rademacher", "gaussian")


@dataclass
class LikelihoodResult:
    """Per-sample log-density (nats), the noise each point maps to, and the exact NFE used."""

    log_prob: Tensor
    x0: Tensor
    nfe: int


def gaussian_log_prob(x: Tensor, std: float = 1.0) -> Tensor:
    """log N(x; 0, std^2 I), summed over all non-batch dimensions."""
    d = x[0].numel()
    sq = x.reshape(x.shape[0], -1).pow(2).sum(dim=1)
    return -0.5 * sq / std**2 - d * (math.log(std) + 0.5 * math.log(2 * math.pi))


def exact_divergence(v: Tensor, x: Tensor) -> Tensor:
    """Trace of dv/dx per sample, one autograd pass per dimension (x must require grad)."""
    flat_v = v.reshape(v.shape[0], -1)
    div = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    for i in range(flat_v.shape[1]):
        (grad,) = torch.autograd.grad(flat_v[:, i].sum(), x, create_graph=False, retain_graph=True)
        div = div + grad.reshape(grad.shape[0], -1)[:, i]
    return div


def hutchinson_divergence(v: Tensor, x: Tensor, probe: Tensor) -> Tensor:
    """Unbiased z^T (dv/dx) z estimate per sample with E[z z^T] = I."""
    (vjp,) = torch.autograd.grad(v, x, grad_outputs=probe, create_graph=False)
    return (vjp * probe).reshape(v.shape[0], -1).sum(dim=1)


def make_probe(like: Tensor, kind: str, generator: torch.Generator | None = None) -> Tensor:
    """A Rademacher or standard Gaussian probe shaped like `like`."""
    if kind == "rademacher":
        bits = torch.randint(0, 2, like.shape, generator=generator, device="cpu")
        return (bits.to(like.dtype) * 2 - 1).to(like.device)
    if kind == "gaussian":
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device="cpu").to(like.device)
    raise ValueError(f"unknown probe '{kind}'; choose one of {', '.join(PROBES)}")


def log_likelihood(
    field: Callable[[Tensor, Tensor], Tensor],
    x1: Tensor,
    solver: SolverSetting,
    t1: float = 1.0,
    prior_std: float = 1.0,
    divergence: str = "exact",
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """log p_1(x1) in nats for any tensor shape (batch first) and float dtype."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence '{divergence}'; choose one of {', '.join(DIVERGENCES)}")
    z = make_probe(x1, probe, generator) if divergence == "hutchinson" else None

    def augmented(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, _ = state
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = field(t, x)
            div = exact_divergence(v, x) if z is None else hutchinson_divergence(v, x, z)
        return v.detach(), div.detach()

    l1 = torch.zeros(x1.shape[0], dtype=x1.dtype, device=x1.device)
    out, nfe = sampling.odeint_counted(augmented, (x1, l1), t1, 0.0, solver)
    xs, ls = out  # type: ignore[misc]
    x0, l0 = xs[-1], ls[-1]
    return LikelihoodResult(log_prob=gaussian_log_prob(x0, prior_std) + l0, x0=x0, nfe=nfe)


def uniform_dequantize(x_uint8: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Map 8-bit integers to [-1, 1] with uniform noise: z = 2 (x + u) / 256 - 1."""
    u = torch.rand(x_uint8.shape, generator=generator, dtype=torch.float64)
    return (2.0 * (x_uint8.to(torch.float64) + u) / 256.0 - 1.0).to(torch.get_default_dtype())


def bits_per_dim(
    log_prob_fn: Callable[[Tensor], Tensor],
    x_uint8: Tensor,
    num_draws: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-image bits/dim of 8-bit data under a density on [-1, 1]^d, K-draw importance weighted.

    -log P(x) <= -log (1/K) sum_k p_y((x + u_k)/256), and p_y = p_z * 2^d on [0, 1]^d; in bits
    per dim this is -(logmeanexp_k log p_z(z_k)) / (d ln 2) + 7 (the paper's +7 for [-1, 1]).
    `log_prob_fn` maps float images in [-1, 1] to per-image log-densities in nats.
    """
    if num_draws < 1:
        raise ValueError(f"num_draws must be >= 1, got {num_draws}")
    draws = torch.stack([log_prob_fn(uniform_dequantize(x_uint8, generator)) for _ in range(num_draws)])
    return bits_per_dim_from_draws(draws, x_uint8[0].numel())


def bits_per_dim_from_draws(log_probs: Tensor, dim: int) -> Tensor:
    """The K-draw bound from already computed log p_z of K dequantized copies, shape (K, N).

    Its first k rows give the k-draw bound for every k <= K, so a whole K-ablation costs K solves.
    """
    k = log_probs.shape[0]
    log_mean = torch.logsumexp(log_probs.to(torch.float64), dim=0) - math.log(k)
    return -log_mean / (dim * math.log(2.0)) + 7.0

