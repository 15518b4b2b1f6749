"""Minibatch OT pairs noise and data by an exact assignment on the batch."""

from __future__ import annotations

import itertools

import pytest
import torch

from fm_core.couplings import couple, ot_permutation, squared_cost


def _mean_pair_cost(x0: torch.Tensor, x1: torch.Tensor) -> float:
    return float((x0 - x1).pow(2).sum(dim=1).mean())


def test_minibatch_ot_lowers_mean_pair_cost_and_never_repeats_a_source_row():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(256, 2, generator=g)
    x1 = torch.randn(256, 2, generator=g) * 0.5
    perm = ot_permutation(x0, x1)
    assert sorted(perm.tolist()) == list(range(256))  # a permutation: each noise row used once
    paired0, paired1 = couple("minibatch_ot", x0, x1)
    assert torch.equal(paired1, x1)
    assert _mean_pair_cost(paired0, x1) < 0.5 * _mean_pair_cost(x0, x1)


def test_assignment_is_optimal_against_brute_force():
    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    cost = squared_cost(x0, x1)
    best = min(sum(float(cost[p[i], i]) for i in range(6)) for p in itertools.permutations(range(6)))
    perm = ot_permutation(x0, x1)
    assert sum(float(cost[perm[i], i]) for i in range(6)) == pytest.approx(best, rel=1e-9)


def test_image_shaped_batches_and_independent_coupling():
    x0, x1 = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    a, b = couple("independent", x0, x1)
    assert a is x0 and b is x1
    a, _ = couple("minibatch_ot", x0, x1)
    assert a.shape == x0.shape


def test_unknown_coupling_and_unequal_batches_are_rejected():
    with pytest.raises(ValueError, match="unknown coupling"):
        couple("sinkhorn", torch.randn(2, 2), torch.randn(2, 2))
    with pytest.raises(ValueError, match="equal batch sizes"):
        ot_permutation(torch.randn(3, 2), torch.randn(4, 2))
