"""What the networks accept and how big they are, without PyTorch: the sweep driver validates a model against
its dataset's shape and bounds its size before anything starts (a U-Net whose levels do not divide the image,
or an MLP of 8192 x 64 that would need tens of GB, are refused by `fmx validate`, not in every trial).

`UNetSpec.check` is the one place the U-Net's constraints are written (fm_core.models.unet.UNet calls it);
the parameter counts follow the modules' layer by layer and are tested against `num_parameters` of the
built networks.
"""

from __future__ import annotations

from dataclasses import dataclass


def _linear(fan_in: int, fan_out: int) -> int:
    return fan_in * fan_out + fan_out


def _conv(fan_in: int, fan_out: int, kernel: int) -> int:
    return fan_in * fan_out * kernel * kernel + fan_out


def _norm(channels: int) -> int:
    return 2 * channels


#: The settings a sweep gives each network (model.* in a sweep file); the data give the rest (its dimension,
#: channels and image size) and training whether it is class-conditional.
MLP_OPTIONS = ("hidden", "depth")
UNET_OPTIONS = ("model_channels", "num_res_blocks", "channel_mult", "attention_resolutions", "num_heads", "num_head_channels", "dropout")

#: Width of a class-conditional MLP's label embedding.
LABEL_DIM = 16


def mlp_parameter_count(dim: int, hidden: int, depth: int, num_classes: int = 0) -> int:
    """fm_core.models.mlp.MLP: `depth` hidden layers on [x, t] (and a label embedding when class-conditional),
    then a linear read-out."""
    labels = (num_classes + 1) * LABEL_DIM if num_classes else 0
    inputs = dim + 1 + (LABEL_DIM if num_classes else 0)
    return labels + _linear(inputs, hidden) + (depth - 1) * _linear(hidden, hidden) + _linear(hidden, dim)


@dataclass(frozen=True)
class UNetSpec:
    """The U-Net's constructor arguments (fm_core.models.unet.UNet), checked and counted without building it."""

    in_channels: int = 1
    image_size: int = 8
    model_channels: int = 32
    num_res_blocks: int = 1
    channel_mult: tuple[int, ...] = (1, 2)
    attention_resolutions: tuple[int, ...] = (4,)
    num_heads: int = 2
    num_head_channels: int = -1
    dropout: float = 0.0
    out_channels: int | None = None
    num_classes: int = 0  # > 0: class-conditional (a label embedding added to the time embedding)

    @property
    def outputs(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def resolutions(self) -> list[int]:
        """The feature-map size at each level (image_size halved per level)."""
        return [self.image_size // 2**i for i in range(len(self.channel_mult))]

    def check(self) -> None:
        """Raise ValueError with the reason, rather than a shape error deep in forward."""
        for name in ("in_channels", "image_size", "model_channels", "num_res_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.outputs < 1:
            raise ValueError(f"out_channels must be >= 1, got {self.outputs}")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ValueError(f"channel_mult must be a non-empty tuple of positive ints, got {self.channel_mult}")
        levels = len(self.channel_mult)
        factor = 2 ** (levels - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size={self.image_size} must be divisible by 2**(len(channel_mult)-1)={factor} "
                             f"so that every one of the {levels} levels halves it exactly")  # fmt: skip
        resolutions = self.resolutions
        missing = [r for r in self.attention_resolutions if r not in resolutions]
        if missing:
            raise ValueError(f"attention_resolutions {missing} never occur; feature-map sizes for image_size="
                             f"{self.image_size} and {levels} levels are {resolutions}")  # fmt: skip
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_head_channels <= 0 and self.num_heads < 1:
            raise ValueError(f"num_heads must be >= 1 when num_head_channels <= 0, got {self.num_heads}")
        attention_levels = {resolutions.index(r) for r in self.attention_resolutions} | {levels - 1}  # + middle
        for level in sorted(attention_levels):
            ch = self.model_channels * self.channel_mult[level]
            div, what = (self.num_head_channels, "num_head_channels") if self.num_head_channels > 0 else (self.num_heads, "num_heads")
            if ch % div:
                raise ValueError(f"attention at {resolutions[level]}x{resolutions[level]} has {ch} channels, "
                                 f"not divisible by {what}={div}")  # fmt: skip

    def parameter_count(self) -> int:
        """Trainable parameters of the U-Net these arguments build (the figure papers report)."""
        mc, emb = self.model_channels, 4 * self.model_channels

        def res_block(cin: int, cout: int) -> int:
            skip = 0 if cin == cout else _conv(cin, cout, 1)
            return _norm(cin) + _conv(cin, cout, 3) + _linear(emb, 2 * cout) + _norm(cout) + _conv(cout, cout, 3) + skip

        def attention(ch: int) -> int:
            return _norm(ch) + _linear(ch, 3 * ch) + _linear(ch, ch)

        total = _linear(mc, emb) + _linear(emb, emb) + _conv(self.in_channels, mc, 3)
        total += (self.num_classes + 1) * emb if self.num_classes else 0  # the label embedding
        ch, res, skips = mc, self.image_size, [mc]
        last = len(self.channel_mult) - 1
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                total += res_block(ch, mc * mult)
                ch = mc * mult
                total += attention(ch) if res in self.attention_resolutions else 0
                skips.append(ch)
            if level != last:
                total += _conv(ch, ch, 3)  # Downsample
                skips.append(ch)
                res //= 2
        total += 2 * res_block(ch, ch) + attention(ch)  # the middle
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for i in range(self.num_res_blocks + 1):
                total += res_block(ch + skips.pop(), mc * mult)
                ch = mc * mult
                total += attention(ch) if res in self.attention_resolutions else 0
                if level != 0 and i == self.num_res_blocks:
                    total += _conv(ch, ch, 3)  # Upsample
                    res *= 2
        return total + _norm(ch) + _conv(ch, self.outputs, 3)
