"""Tests for the ADM-style U-Net vector field (fm_core.models.unet)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fm_core.models.unet import ResBlock, UNet, _num_groups, num_parameters

CIFAR10 = dict(  # Lipman et al. (2023), Table 3
    in_channels=3, image_size=32, model_channels=256, num_res_blocks=2, channel_mult=(1, 2, 2, 2),
    attention_resolutions=(16,), num_head_channels=64,
)


def _unzero(model: nn.Module, std: float = 0.05) -> nn.Module:
    """Randomise the zero-initialised weights so every path through the network carries signal."""
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def _scale_shift_params(model: nn.Module) -> int:
    """Parameters ADM's scale-shift norm adds over DDPM's additive time bias (half of each emb Linear)."""
    return sum(
        (m.emb_layers[1].out_features // 2) * (m.emb_layers[1].in_features + 1)
        for m in model.modules() if isinstance(m, ResBlock)
    )


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_shapes_and_scalar_time_broadcast(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = _unzero(UNet()).eval()
    out_scalar = model(x, torch.tensor(0.3))
    out_vec = model(x, torch.full((4,), 0.3))
    assert out_scalar.shape == x.shape
    assert out_vec.shape == x.shape
    torch.testing.assert_close(out_scalar, out_vec)
    torch.testing.assert_close(model(x, 0.3), out_vec)  # python float also accepted
    assert model(x, torch.rand(4)).shape == x.shape


def test_out_channels_and_fresh_model_predicts_zero(x: torch.Tensor) -> None:
    model = UNet(out_channels=3)
    out = model(x, torch.rand(4))
    assert out.shape == (4, 3, 8, 8)
    # The zero-initialised output conv makes a fresh network the zero vector field, as in ADM.
    assert torch.count_nonzero(out) == 0


def test_cifar10_config_parameter_count() -> None:
    # Built on the meta device: counting parameters needs no memory or init time.
    with torch.device("meta"):
        model = UNet(**CIFAR10)
    n = num_parameters(model)
    print(f"CIFAR-10 (Table 3) U-Net parameters: {n:,}")
    assert 150e6 < n < 156e6, n
    # Sanity-check the layout against a published number: at 128 channels this is DDPM's CIFAR-10
    # network (Ho et al. 2020, 35.7M parameters) plus ADM's scale-shift projections.
    with torch.device("meta"):
        ddpm = UNet(**{**CIFAR10, "model_channels": 128})
    n_ddpm = num_parameters(ddpm) - _scale_shift_params(ddpm)
    print(f"128-channel variant without scale-shift extras: {n_ddpm:,}")
    assert 35.6e6 < n_ddpm < 35.8e6, n_ddpm


def test_four_level_cifar_layout_runs_forward() -> None:
    """Same depth/attention layout as CIFAR-10 but narrow, so a real forward pass stays cheap."""
    model = _unzero(UNet(**{**CIFAR10, "model_channels": 32, "num_head_channels": 16, "num_res_blocks": 1}))
    xb = torch.randn(2, 3, 32, 32)
    assert model(xb, torch.tensor([0.2, 0.7])).shape == xb.shape


def test_time_conditioning_changes_output(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = _unzero(UNet()).eval()
    a, b = model(x, 0.1), model(x, 0.9)
    assert (a - b).abs().max() > 1e-3 * a.abs().max()


def test_gradients_reach_every_parameter(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = _unzero(UNet(dropout=0.1))
    loss = (model(x, torch.rand(4)) * torch.randn_like(x)).sum()
    loss.backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient reached: {dead}"


def test_narrow_widths_pick_valid_group_counts() -> None:
    assert [_num_groups(c) for c in (16, 24, 48, 64, 256, 7)] == [16, 24, 24, 32, 32, 7]
    model = UNet(model_channels=24, num_heads=3)
    assert model(torch.randn(2, 1, 8, 8), 0.5).shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(image_size=10, channel_mult=(1, 2, 2)), "divisible by 2"),
        (dict(attention_resolutions=(16,)), "never occur"),
        (dict(model_channels=30, num_heads=8), "not divisible by num_heads"),
        (dict(model_channels=32, num_head_channels=24), "not divisible by num_head_channels"),
        (dict(channel_mult=()), "channel_mult"),
        (dict(num_res_blocks=0), "num_res_blocks"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_invalid_configs_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_bad_inputs_raise(x: torch.Tensor) -> None:
    model = UNet()
    with pytest.raises(ValueError, match="one entry per sample"):
        model(x, torch.rand(3))
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 1, 7, 7), 0.5)


def test_short_training_lowers_loss() -> None:
    torch.manual_seed(0)
    model = UNet()
    xb, tb, target = torch.randn(16, 1, 8, 8), torch.rand(16), torch.randn(16, 1, 8, 8)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = (model(xb, tb) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"in_channels": 3, "image_size": 32, "model_channels": 128, "num_res_blocks": 2, "channel_mult": (1, 2, 2, 2),
         "attention_resolutions": (16,), "num_head_channels": 64},  # the paper's CIFAR-10 layout
        {"in_channels": 3, "image_size": 16, "model_channels": 16, "num_res_blocks": 3, "channel_mult": (1, 2, 4),
         "attention_resolutions": ()},
        {"image_size": 8, "model_channels": 8, "channel_mult": (1,), "attention_resolutions": (8,)},
        {"in_channels": 3, "image_size": 32, "model_channels": 64, "channel_mult": (1, 2, 2), "attention_resolutions": (16, 8),
         "num_heads": 4, "out_channels": 6},
    ],
)
def test_the_torch_free_parameter_count_is_the_built_networks(kwargs):
    """fmx validate bounds model size from UNetSpec without PyTorch: the count must be the real one."""
    from fm_core.models.spec import UNetSpec

    assert UNetSpec(**kwargs).parameter_count() == num_parameters(UNet(**kwargs))


@pytest.mark.parametrize(("dim", "hidden", "depth"), [(2, 64, 3), (2, 512, 5), (64, 7, 1)])
def test_the_torch_free_mlp_count_is_the_built_networks(dim, hidden, depth):
    from fm_core.models.mlp import MLP
    from fm_core.models.spec import mlp_parameter_count

    assert mlp_parameter_count(dim, hidden, depth) == num_parameters(MLP(dim, hidden, depth))
