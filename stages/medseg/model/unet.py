"""Our U-Net, built from small named blocks: ``DoubleConv``, ``Down``, ``Up``, ``Stem``, ``OutConv``.

``UNet(cfg, in_channels, num_classes)`` maps images ``(N, in_channels, H, W)``
(float) to logits ``(N, num_classes, H, W)`` (no softmax) for any ``H`` and
``W``: it pads its input with zeros on the bottom and right to a multiple of
``stem_stride * 2**depth`` and crops the logits back, so odd sizes such as
97x131 work. Its knobs are those of ``medseg.config.ModelConfig`` (validated
there, once), after the earlier TensorFlow "FlexUNet" experiment:

- ``base_filters``: channels at full resolution; level ``l`` has ``base_filters * 2**l``.
- ``depth``: number of down-sampling steps (the bottleneck is at ``H / 2**depth``).
- ``first_kernel``: kernel size of the first block; it shrinks by 2 per level
  down to 3 (7 -> 5 -> 3 -> 3 ...). The decoder always uses 3x3.
- ``stem_stride``: 1, 2 or 4. With ``s > 1`` the network starts by folding each
  ``s x s`` patch into channels (space-to-depth, lossless) and ends by unfolding
  ``s * s`` logits per low-resolution pixel back to full size (a learned
  pixel-shuffle head), so no convolution runs at full resolution: about ``s**2``
  times less compute for the same widths.
- ``dilation``: dilation of the encoder convolutions (down path and bottleneck).
- ``dropout``: ``Dropout2d`` rate in the deeper half of the encoder.
- ``norm``: ``batch``, ``instance``, ``group`` or ``none``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medseg.config import NORMS, ModelConfig

MAX_GROUPS = 8


# --------------------------------------------------------------------------- shapes
def kernel_sizes(first_kernel: int, depth: int) -> list[int]:
    """Kernel size per encoder level ``0..depth``: 7 -> [7, 5, 3, 3, 3] for depth 4."""
    return [max(3, first_kernel - 2 * level) for level in range(depth + 1)]


def channels(base_filters: int, depth: int) -> list[int]:
    """Channels per encoder level ``0..depth``: 16 -> [16, 32, 64, 128, 256] for depth 4."""
    return [base_filters * 2**level for level in range(depth + 1)]


# --------------------------------------------------------------------------- any H, W
def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the bottom and right of ``(N, C, H, W)`` so H and W divide by ``multiple``."""
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


class PadCrop(nn.Module):
    """Let a network that needs H, W divisible by ``multiple`` accept any size."""

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, num_classes, H, W)."""
        height, width = x.shape[-2:]
        return self.net(pad_to_multiple(x, self.multiple))[..., :height, :width]


# --------------------------------------------------------------------------- blocks
NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "instance": lambda channels: nn.InstanceNorm2d(channels, affine=True),
    # gcd keeps the group count a divisor of any channel count, e.g. base_filters=12.
    "group": lambda channels: nn.GroupNorm(math.gcd(MAX_GROUPS, channels), channels),
    "none": lambda channels: nn.Identity(),
}
assert set(NORM_LAYERS) == set(NORMS), "every norm the schema allows needs a layer"


def norm_layer(norm: str, num_channels: int) -> nn.Module:
    """The normalisation layer ``norm`` (one of ``medseg.config.NORMS``) for ``num_channels``."""
    try:
        make = NORM_LAYERS[norm]
    except KeyError:
        raise ValueError(f"norm: unknown {norm!r}; choose one of {', '.join(NORM_LAYERS)}") from None
    return make(num_channels)


class DoubleConv(nn.Sequential):
    """(conv k x k -> norm -> ReLU) x 2 [-> Dropout2d]; keeps H and W.

    (N, in_channels, H, W) -> (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, dilation: int, norm: str,
                 dropout: float) -> None:
        padding = dilation * (kernel - 1) // 2
        bias = norm == "none"  # a norm layer right after the conv makes its bias redundant
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers += [
                nn.Conv2d(c_in, out_channels, kernel, padding=padding, dilation=dilation, bias=bias),
                norm_layer(norm, out_channels),
                nn.ReLU(inplace=True),
            ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class Down(nn.Sequential):
    """Max-pool by 2, then ``DoubleConv``: (N, C_in, H, W) -> (N, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int, **conv: Any) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, **conv))


class Up(nn.Module):
    """Transposed conv x2, concatenate the skip, then ``DoubleConv``.

    (N, C_in, H/2, W/2) and skip (N, C_in/2, H, W) -> (N, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels, kernel=3, dilation=1, norm=norm, dropout=0.0)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class Stem(nn.PixelUnshuffle):
    """Space-to-depth by ``stride``: (N, C, H, W) -> (N, C * stride**2, H / stride, W / stride).

    Lossless, unlike a strided convolution: every input pixel reaches the first block.
    """


class OutConv(nn.Conv2d):
    """1x1 conv to class logits: (N, C, H, W) -> (N, num_classes, H * scale, W * scale).

    With ``scale > 1`` the conv predicts ``scale**2`` logits per pixel, one for each
    position of the ``scale x scale`` patch the stem folded, and a pixel shuffle puts
    them back in place (the learned inverse of ``Stem``).
    """

    def __init__(self, in_channels: int, num_classes: int, scale: int) -> None:
        super().__init__(in_channels, num_classes * scale**2, kernel_size=1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        return F.pixel_shuffle(logits, self.scale) if self.scale > 1 else logits


# --------------------------------------------------------------------------- network
class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with same-padding convolutions.

    Input (N, in_channels, H, W), any H and W; output logits (N, num_classes, H, W).
    Level ``l`` works at ``H / (stem_stride * 2**l)`` with ``base_filters * 2**l`` channels.
    """

    def __init__(self, cfg: ModelConfig, in_channels: int, num_classes: int) -> None:
        super().__init__()
        depth, stride = cfg.depth, cfg.stem_stride
        self.multiple = stride * 2**depth
        chans, kernels = channels(cfg.base_filters, depth), kernel_sizes(cfg.first_kernel, depth)
        # Dropout only where the feature maps are small and abstract (deeper half, bottleneck
        # included): dropping full-resolution features would blur boundaries.
        rates = [cfg.dropout if level > depth // 2 else 0.0 for level in range(depth + 1)]
        self.stem = Stem(stride)
        self.inc = DoubleConv(in_channels * stride**2, chans[0], kernels[0], cfg.dilation, cfg.norm, rates[0])
        self.downs = nn.ModuleList(
            Down(chans[lv - 1], chans[lv], kernel=kernels[lv], dilation=cfg.dilation, norm=cfg.norm,
                 dropout=rates[lv])
            for lv in range(1, depth + 1)
        )
        self.ups = nn.ModuleList(Up(chans[lv], chans[lv - 1], norm=cfg.norm) for lv in range(depth, 0, -1))
        self.outc = OutConv(chans[0], num_classes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> logits (N, num_classes, H, W).

        F = base_filters, S = stem_stride, P = S * 2**depth.
        """
        height, width = x.shape[-2:]
        x = pad_to_multiple(x, self.multiple)  # (N, in_channels, H', W'), H' and W' multiples of P
        skips = [self.inc(self.stem(x))]  # (N, F, H' / S, W' / S)
        for down in self.downs:  # level l: (N, F * 2**l, H' / (S * 2**l), W' / (S * 2**l))
            skips.append(down(skips[-1]))
        x = skips.pop()  # bottleneck: (N, F * 2**depth, H' / P, W' / P)
        for up in self.ups:  # one level up per step, joined with that level's skip
            x = up(x, skips.pop())
        return self.outc(x)[..., :height, :width]  # (N, num_classes, H, W)
