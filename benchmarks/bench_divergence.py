"""Ways to compute the exact divergence (trace of dv/dx) of a 2-D field, side by side in one run.

fm_core's `exact_divergence` takes one vector-Jacobian product per dimension from a single recorded forward
pass. This script times it against the batched alternatives one would try to beat it with, on the network of
bench_fm_core.py (an MLP, hidden 512, depth 5, SiLU; 1000 points; one thread by default):

* autograd with `is_grads_batched=True` (all one-hot cotangents in one vmapped backward),
* `torch.func.vjp` + `vmap` over the one-hot cotangents (jacrev's way),
* `torch.func.jvp` + `vmap` over the one-hot tangents (forward mode, jacfwd's way),

and the forward pass alone (no graph), the floor any of them pays. Every variant's divergence is checked
against fm_core's (max |difference| printed). Repetitions are interleaved, the order rotating every round;
medians are reported, with the ratio of fm_core's time to each variant's (> 1: the variant is faster).

    python benchmarks/bench_divergence.py            # full run
    python benchmarks/bench_divergence.py --quick    # seconds, numbers meaningless
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from fm_core.likelihood import exact_divergence
from fm_core.models.mlp import MLP


def _one_hots(x: Tensor) -> Tensor:
    d = x.shape[1]
    return torch.eye(d, dtype=x.dtype).unsqueeze(1).expand(d, x.shape[0], d).contiguous()


def _trace(jac_rows: Tensor) -> Tensor:  # (d, batch, d) rows of the Jacobian -> (batch,)
    return torch.diagonal(jac_rows, dim1=0, dim2=2).sum(dim=1)


def variants(model: MLP, t: Tensor) -> dict[str, Callable[[Tensor], Tensor | None]]:
    field = lambda x: model(x, t)  # noqa: E731

    def fm_core_loop(x: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        return exact_divergence(field(x), x)

    def grads_batched(x: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        (rows,) = torch.autograd.grad(field(x), x, _one_hots(x), is_grads_batched=True)
        return _trace(rows)

    def func_vjp_vmap(x: Tensor) -> Tensor:
        _, pullback = vjp(field, x)
        (rows,) = vmap(pullback)(_one_hots(x))
        return _trace(rows)

    def func_jvp_vmap(x: Tensor) -> Tensor:
        _, columns = vmap(lambda tangent: jvp(field, (x,), (tangent,)))(_one_hots(x))
        return _trace(columns)

    def forward_only(x: Tensor) -> None:
        with torch.no_grad():
            field(x)

    return {"fm_core per-dimension VJPs": fm_core_loop, "autograd is_grads_batched": grads_batched,
            "torch.func vjp + vmap": func_vjp_vmap, "torch.func jvp + vmap": func_jvp_vmap,
            "forward pass alone (floor)": forward_only}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=1000)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds; the median is reported")
    p.add_argument("--repeats", type=int, default=5, help="calls per variant per round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.points, args.hidden, args.rounds, args.repeats = 200, 64, 2, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MLP(2, hidden=args.hidden, depth=args.depth).eval()
    x, t = torch.randn(args.points, 2), torch.full((args.points,), 0.5)
    chosen = variants(model, t)
    reference = chosen["fm_core per-dimension VJPs"](x)
    agree = {name: float((fn(x) - reference).detach().abs().max()) for name, fn in chosen.items() if name.startswith(("auto", "torch"))}
    times: dict[str, list[float]] = {name: [] for name in chosen}
    names = list(chosen)
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            start = time.perf_counter()
            for _ in range(args.repeats):
                chosen[name](x)
            times[name].append((time.perf_counter() - start) / args.repeats)
    ours = statistics.median(times["fm_core per-dimension VJPs"])
    print(f"torch {torch.__version__}, {args.threads} thread(s); MLP hidden {args.hidden} depth {args.depth}; "
          f"{args.points} points; {args.rounds} rounds x {args.repeats} calls")  # fmt: skip
    print("| variant | median ms | ratio fm_core/variant | max abs diff to fm_core |")
    print("|---|---:|---:|---:|")
    for name in names:
        med = statistics.median(times[name])
        diff = f"{agree[name]:.1e}" if name in agree else "-"
        print(f"| {name} | {med * 1e3:.1f} | {ours / med:.2f} | {diff} |")


if __name__ == "__main__":
    main()
