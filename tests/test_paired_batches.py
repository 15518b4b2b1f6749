"""Couplings off the critical path: a batch prefetched and paired on the worker thread is the batch paired
inline, batch for batch, in the trial's own loop (rank 0) and on a DDP rank of a TorchTrainer."""

from __future__ import annotations

import pytest
import torch

from fm_core.couplings import MinibatchOT, Sinkhorn, pair
from fm_core.paired_batches import DrawnBatch, PairedBatches, batch_generator, draw_noise
from orchestrator.plan import plan_sweep
from orchestrator.training_loop import TrialParts
from orchestrator.validation import parse_sweep


def _draw(coupling):
    def draw(step: int) -> DrawnBatch:
        generator = batch_generator(7, 0, step)
        x1 = torch.rand(32, 2, generator=generator)
        return DrawnBatch(x1, None, *draw_noise(x1, coupling, generator))

    return draw


@pytest.mark.parametrize("coupling", [MinibatchOT(), Sinkhorn(reg=1.0)], ids=["minibatch_ot", "sinkhorn"])
def test_prefetched_batches_are_the_inline_ones_batch_for_batch(coupling):
    inline = PairedBatches(_draw(coupling), coupling, prefetch=False)
    ahead = PairedBatches(_draw(coupling), coupling, prefetch=True)
    try:
        for step in [0, 1, 2, 3, 7, 8]:  # 7: out of order, as after a restore; the pending batch is dropped
            a, b = inline.take(step), ahead.take(step)
            assert torch.equal(a.x0, b.x0) and torch.equal(a.x1, b.x1)
            assert not torch.equal(a.x0, _draw(coupling)(step).x0)  # the pairing did re-order the noise
        assert ahead._pending is not None and ahead._pending[0] == 9  # the next batch is being paired
    finally:
        ahead.close()


def _parts(coupling: str, prefetch: bool, rank: int, grad_accum: int = 1) -> TrialParts:
    config = parse_sweep({
        "name": "pairs",
        "dataset": {"name": "8gaussians"},
        "model": {"kind": "mlp", "hidden": 16, "depth": 2},
        "train": {"steps": 8, "batch_size": 32, "log_every": 4, "coupling_prefetch": prefetch, "grad_accum": grad_accum,
                  "coupling_options": {"sinkhorn": {"reg": 1.0}}},
        "eval": {"samples": 50, "likelihood_points": 10, "reference_tol": None, "likelihood": {"solver": "euler", "nfe": 4}},
        "grid": {"path": ["ot"], "objective": ["fm"], "coupling": [coupling], "solver": ["euler"], "nfe": [4]},
    })  # fmt: skip
    key = plan_sweep(config).trainings[0]
    return TrialParts.build(config.for_training(key), key, rank=rank)


@pytest.mark.parametrize("coupling", ["minibatch_ot", "sinkhorn"])
def test_both_routes_train_on_the_same_pairs_prefetched_or_inline(coupling):
    """Rank 0 is the in-trial route's only worker and a TorchTrainer's first; rank 1 its second. Each rank's
    batches are its own, and prefetching changes none of them, nor the losses trained on them."""
    seen: dict[tuple[int, bool], list[torch.Tensor]] = {}
    for rank in (0, 1):
        for prefetch in (False, True):
            parts = _parts(coupling, prefetch, rank)
            batches = []
            try:
                for _ in range(3):
                    x1, _labels, x0 = parts.trainer.paired_batch(32)
                    batches.append(torch.cat([x0, x1], dim=1))
                    parts.trainer.train_until(parts.state.step + 1)
                parts.trainer.train_until(8)
            finally:
                parts.trainer.close()
            seen[rank, prefetch] = [*batches, torch.tensor([loss for _, loss in parts.state.losses])]
    for rank in (0, 1):
        assert all(torch.equal(a, b) for a, b in zip(seen[rank, False], seen[rank, True], strict=True))
    assert not torch.equal(seen[0, True][0], seen[1, True][0])  # distinct data per rank


def test_micro_batches_are_paired_apart_and_the_same_prefetched():
    batches, drawn = [], None
    for prefetch in (False, True):
        parts = _parts("minibatch_ot", prefetch, 0, grad_accum=2)
        try:
            batches.append(parts.trainer.paired_batch(32))
            drawn = parts.trainer._draw(0, 32)  # batch 0 before pairing
        finally:
            parts.trainer.close()
    (x1, _, x0), (y1, _, y0) = batches
    assert torch.equal(x0, y0) and torch.equal(x1, y1) and torch.equal(x1, drawn.x1)
    assert torch.equal(x0, pair(MinibatchOT(), drawn.x0, drawn.x1, chunks=2))
    assert not torch.equal(x0, pair(MinibatchOT(), drawn.x0, drawn.x1, chunks=1))  # not across the whole batch
