"""ADM-style U-Net (Dhariwal & Nichol, 2021) used as the image vector field v_t(x) in Flow Matching.

Lipman et al. (2023, Table 3) reuse the ADM architecture unchanged and only swap the training
objective, so the layout here follows ADM: an encoder of ResBlocks (optionally followed by
self-attention) with strided-conv downsampling, a res/attn/res middle, and a decoder that
concatenates the encoder activations as skip connections.  Times t live in [0, 1] rather than
ADM's integer steps, so t is scaled by 1000 before the sinusoidal embedding to keep the same
frequency coverage.  Residual branches and the output layer start at zero, so the freshly built
network predicts v = 0 and every block begins as the identity, which ADM found stabilises training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fm_core.models.spec import UNetSpec

TIME_SCALE = 1000.0


def num_parameters(model: nn.Module) -> int:
    """Trainable parameter count, the size figure papers report (e.g. 35.7M for CIFAR-10)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _num_groups(channels: int) -> int:
    """32 groups as in ADM, falling back to the largest divisor <= 32 so narrow CPU models work."""
    return max(g for g in range(1, min(32, channels) + 1) if channels % g == 0)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_num_groups(channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    """Zero a layer so the residual branch it closes starts as a no-op."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of TIME_SCALE * t; geometric frequencies resolve both coarse and fine t."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (TIME_SCALE * t.float())[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class EmbBlock(nn.Module):
    """Marker for blocks that take the time embedding, so TimestepSequential can route it."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ResBlock(EmbBlock):
    """GroupNorm/SiLU/conv residual block; t enters as a per-channel scale and shift of the second
    norm ("use_scale_shift_norm"), which ADM found conditions more strongly than adding a bias."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.out_norm = _norm(out_ch)
        self.out_layers = nn.Sequential(
            nn.SiLU(), nn.Dropout(dropout), _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        )
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb).type(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(EmbBlock):
    """Multi-head self-attention over all pixels: global context that convolutions reach only slowly."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))
        # (B, 3C, L) -> three tensors of shape (B, heads, L, head_dim)
        q, k, v = qkv.reshape(b, 3, self.num_heads, c // self.num_heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h * w)
        return x + self.proj_out(out).reshape(b, c, h, w)


class Downsample(EmbBlock):
    """Learned 2x downsampling (strided 3x3 conv), ADM's conv_resample=True choice."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(EmbBlock):
    """Nearest-neighbour 2x upsampling then a 3x3 conv, avoiding transposed-conv checkerboards."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepSequential(nn.Sequential):
    """A Sequential whose members may take the time embedding, so blocks compose uniformly."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, EmbBlock) else layer(x)
        return x


class UNet(nn.Module):
    """Time-conditioned U-Net v_theta(t, x) mapping (B, C, H, W) images to same-shaped vector fields.

    ``attention_resolutions`` are spatial sizes (16 means "at the 16x16 feature maps"), matching how
    the Flow Matching paper's Table 3 states them; ADM's code takes downsampling factors instead.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        model_channels: int = 32,
        num_res_blocks: int = 1,
        channel_mult: tuple[int, ...] = (1, 2),
        attention_resolutions: tuple[int, ...] = (4,),
        num_heads: int = 2,
        num_head_channels: int = -1,
        dropout: float = 0.0,
        out_channels: int | None = None,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        attention_resolutions = tuple(int(r) for r in attention_resolutions)
        out_channels = in_channels if out_channels is None else out_channels
        UNetSpec(in_channels, image_size, model_channels, num_res_blocks, channel_mult, attention_resolutions,
                 num_heads, num_head_channels, dropout, out_channels, num_classes).check()  # fmt: skip
        self.in_channels, self.out_channels, self.image_size = in_channels, out_channels, image_size
        self.model_channels = model_channels
        self.downsample_factor = 2 ** (len(channel_mult) - 1)

        def heads(ch: int) -> int:
            return ch // num_head_channels if num_head_channels > 0 else num_heads

        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        # Class-conditional (num_classes > 0): a label embedding joins the time embedding, as in ADM; index
        # num_classes is the null label classifier-free guidance trains with and samples from.
        self.num_classes = num_classes
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        ch = model_channels
        res = image_size
        skip_chs = [ch]
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, model_channels * mult, emb_dim, dropout)]
                ch = model_channels * mult
                if res in attention_resolutions:
                    layers.append(AttentionBlock(ch, heads(ch)))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chs.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                skip_chs.append(ch)
                res //= 2

        self.middle_block = TimestepSequential(
            ResBlock(ch, ch, emb_dim, dropout), AttentionBlock(ch, heads(ch)), ResBlock(ch, ch, emb_dim, dropout)
        )

        # Each decoder level has one extra ResBlock so it consumes the downsample's skip as well.
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skip_chs.pop(), model_channels * mult, emb_dim, dropout)]
                ch = model_channels * mult
                if res in attention_resolutions:
                    layers.append(AttentionBlock(ch, heads(ch)))
                if level != 0 and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    res *= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """Evaluate v(t, x) (v(t, x | y) when class-conditional; y None: the null label); a scalar t is
        broadcast because ODE solvers call with one time per step."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected x of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % self.downsample_factor or x.shape[-1] % self.downsample_factor:
            raise ValueError(f"H and W must be divisible by {self.downsample_factor}, got {tuple(x.shape[-2:])}")
        t = torch.as_tensor(t, device=x.device)
        if t.numel() == 1:
            t = t.reshape(1).expand(x.shape[0])
        elif t.numel() == x.shape[0]:
            t = t.reshape(x.shape[0])
        else:
            raise ValueError(f"t must be a scalar or have one entry per sample ({x.shape[0]}), got {tuple(t.shape)}")
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(x.dtype))
        if self.label_embed is not None:
            y = torch.full((x.shape[0],), self.num_classes, device=x.device) if y is None else y
            emb = emb + self.label_embed(y).to(emb.dtype)

        h, skips = x, []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
