"""Couplings of noise and data in a batch: independent, the exact minibatch OT assignment, and Sinkhorn."""

from __future__ import annotations

import itertools

import pytest
import torch

from fm_core.couplings import (
    COUPLINGS, Independent, MinibatchOT, Sinkhorn, couple, make_coupling, ot_permutation, pair, squared_cost,
)


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
        couple("nearest", torch.randn(2, 2), torch.randn(2, 2))
    with pytest.raises(ValueError, match="equal batch sizes"):
        ot_permutation(torch.randn(3, 2), torch.randn(4, 2))


def _checkerboard_like(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g), torch.rand(n, 2, generator=g) * 4 - 2


def _plan_cost(reg: float, x0: torch.Tensor, x1: torch.Tensor) -> float:
    return float((Sinkhorn(reg=reg).plan(x0, x1) * squared_cost(x0, x1)).sum())


def test_sinkhorn_goes_from_the_exact_assignment_to_independent_pairs_as_reg_grows():
    x0, x1 = _checkerboard_like(64, 0)
    cost = squared_cost(x0, x1)
    exact = float(cost[ot_permutation(x0, x1), torch.arange(64)].mean())
    independent = float(cost.mean())  # the expected cost of a uniformly random pairing
    assert exact < 0.2 * independent  # the two ends are far apart on this batch
    sharp, middle, flat = (_plan_cost(reg, x0, x1) for reg in (0.01, 1.0, 1e4))
    assert sharp == pytest.approx(exact, rel=0.05)
    assert flat == pytest.approx(independent, rel=0.01)
    assert exact < sharp < middle < flat


def test_sinkhorn_pairs_are_drawn_from_its_plan_and_keep_every_data_row():
    x0, x1 = _checkerboard_like(64, 1)
    cost = squared_cost(x0, x1)
    u = torch.rand(64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sharp = Sinkhorn(reg=0.01).noise_index(x0, x1, u)
    exact = float(cost[ot_permutation(x0, x1), torch.arange(64)].mean())
    assert float(cost[sharp, torch.arange(64)].mean()) == pytest.approx(exact, rel=0.1)
    assert torch.equal(sharp, Sinkhorn(reg=0.01).noise_index(x0, x1, u))  # a function of the batch and u
    flat = Sinkhorn(reg=1e4).noise_index(x0, x1, u)
    assert len(set(flat.tolist())) < 64  # drawn from the plan: noise rows repeat (not a permutation)
    paired0, paired1 = couple("sinkhorn", x0, x1, torch.Generator().manual_seed(0))
    assert torch.equal(paired1, x1) and paired0.shape == x0.shape


def test_pairing_by_micro_batch_couples_within_each_chunk():
    x0, x1 = _checkerboard_like(64, 3)
    paired = pair(MinibatchOT(), x0, x1, chunks=2)
    assert torch.equal(paired[:32], x0[:32][ot_permutation(x0[:32], x1[:32])])
    assert torch.equal(paired[32:], x0[32:][ot_permutation(x0[32:], x1[32:])])
    assert pair(Independent(), x0, x1) is x0


def test_every_coupling_option_declares_a_range_and_names_come_from_the_classes():
    from dataclasses import fields

    from fm_core.lazy import option_range
    from fm_core.names import COUPLING_NAMES

    assert COUPLING_NAMES == tuple(COUPLINGS) == ("independent", "minibatch_ot", "sinkhorn")
    for cls in COUPLINGS.values():
        assert all(option_range(cls, f.name) is not None for f in fields(cls))
    assert make_coupling("sinkhorn", reg=0.5) == Sinkhorn(reg=0.5)


def test_tables_name_each_coupling_from_its_class():
    from orchestrator.tables import method_label

    labels = [method_label("ot", "fm", name) for name in COUPLINGS]
    assert labels == ["FM-OT", "FM-OT +mbOT", "FM-OT +Sinkhorn"]
