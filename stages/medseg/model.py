"""Segmentation networks: our U-Net, and a factory that also builds MONAI's.

``build_model(cfg, in_channels, num_classes)`` turns a ``ModelConfig`` into an
``nn.Module`` that maps images ``(N, in_channels, H, W)`` (float) to logits
``(N, num_classes, H, W)`` (no softmax) for any ``H`` and ``W``: every network
pads its input with zeros on the bottom and right to a multiple of
``2**depth`` and crops the logits back, so odd sizes such as 97x131 work.

``ModelConfig`` is stored in checkpoints (``to_dict``/``from_dict``) so that
evaluation and prediction rebuild the same network from the checkpoint alone.
The knobs follow the earlier TensorFlow "FlexUNet" experiment:

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

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

NORMS = ("batch", "instance", "group", "none")
MAX_GROUPS = 8
STEM_STRIDES = (1, 2, 4)


# --------------------------------------------------------------------------- validation
def _check_int(option: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{option}: must be an integer >= {minimum}, got {value!r}")


def check_knobs(base_filters: int, depth: int, first_kernel: int, dilation: int, dropout: float, norm: str,
                stem_stride: int = 1) -> None:
    """Raise ``ValueError`` naming the first bad option and its allowed values."""
    _check_int("base_filters", base_filters, 1)
    _check_int("depth", depth, 1)
    _check_int("first_kernel", first_kernel, 3)
    if first_kernel % 2 == 0:
        raise ValueError(f"first_kernel: must be odd (3, 5, 7, ...) so 'same' padding exists, got {first_kernel}")
    _check_int("dilation", dilation, 1)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: must be a rate in [0, 1), got {dropout!r}")
    if norm not in NORMS:
        raise ValueError(f"norm: unknown {norm!r}; choose one of {', '.join(NORMS)}")
    if isinstance(stem_stride, bool) or stem_stride not in STEM_STRIDES:
        raise ValueError(f"stem_stride: must be one of {', '.join(map(str, STEM_STRIDES))}, got {stem_stride!r}")


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
def norm_layer(norm: str, num_channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(num_channels)
    if norm == "instance":
        return nn.InstanceNorm2d(num_channels, affine=True)
    if norm == "group":
        # gcd keeps the group count a divisor of any channel count, e.g. base_filters=12.
        return nn.GroupNorm(math.gcd(MAX_GROUPS, num_channels), num_channels)
    return nn.Identity()


class DoubleConv(nn.Sequential):
    """(conv k x k -> norm -> ReLU) x 2 [-> Dropout2d]; keeps H and W.

    (N, in_channels, H, W) -> (N, out_channels, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        dilation: int = 1,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
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

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch") -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels, norm=norm)

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

    def __init__(self, in_channels: int, num_classes: int, scale: int = 1) -> None:
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

    Raises:
        ValueError: an option is out of range; the message names it and the allowed values.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base_filters: int = 16,
        depth: int = 4,
        first_kernel: int = 3,
        dilation: int = 1,
        dropout: float = 0.0,
        norm: str = "batch",
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        _check_int("num_classes", num_classes, 1)
        check_knobs(base_filters, depth, first_kernel, dilation, dropout, norm, stem_stride)
        self.multiple = stem_stride * 2**depth
        chans, kernels = channels(base_filters, depth), kernel_sizes(first_kernel, depth)
        # Dropout only where the feature maps are small and abstract (deeper half, bottleneck
        # included): dropping full-resolution features would blur boundaries.
        rates = [dropout if level > depth // 2 else 0.0 for level in range(depth + 1)]
        self.stem = Stem(stem_stride)
        self.inc = DoubleConv(in_channels * stem_stride**2, chans[0], kernels[0], dilation, norm, rates[0])
        self.downs = nn.ModuleList(
            Down(chans[lv - 1], chans[lv], kernel=kernels[lv], dilation=dilation, norm=norm, dropout=rates[lv])
            for lv in range(1, depth + 1)
        )
        self.ups = nn.ModuleList(Up(chans[lv], chans[lv - 1], norm=norm) for lv in range(depth, 0, -1))
        self.outc = OutConv(chans[0], num_classes, stem_stride)

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


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ModelConfig:
    """Which network to build and its knobs (see the module docstring).

    ``name``: ``unet`` (ours), ``monai_unet``, ``monai_basicunet``, ``monai_dynunet``.
    ``in_channels`` and ``num_classes`` come from the dataset and are passed to
    ``build_model`` separately.

    Raises:
        ValueError: a knob is out of range (the name is checked by ``build_model``).
    """

    name: str = "unet"
    base_filters: int = 16
    depth: int = 4
    first_kernel: int = 3
    dilation: int = 1
    dropout: float = 0.0
    norm: str = "batch"
    stem_stride: int = 1

    def __post_init__(self) -> None:
        check_knobs(self.base_filters, self.depth, self.first_kernel, self.dilation, self.dropout, self.norm,
                    self.stem_stride)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; missing keys take their defaults, unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model config: unknown key {unknown[0]!r}; known keys are {sorted(known)}")
        return cls(**data)


# --------------------------------------------------------------------------- factory
def _require(cfg: ModelConfig, option: str, allowed: Any, why: str) -> None:
    value = getattr(cfg, option)
    if value != allowed:
        raise ValueError(f"{cfg.name}: {option}={value!r} is not supported ({why}); set {option}: {allowed!r}")


def _build_unet(cfg: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    knobs = {k: v for k, v in cfg.to_dict().items() if k != "name"}
    return UNet(in_channels, num_classes, **knobs)


def _build_monai_unet(cfg: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    from monai.networks.nets import UNet as MonaiUNet

    _require(cfg, "first_kernel", 3, "MONAI's UNet uses one kernel size for all levels")
    _require(cfg, "dilation", 1, "MONAI's UNet has no dilation")
    _require(cfg, "stem_stride", 1, "only our U-Net has a space-to-depth stem")
    # MONAI normalises the last up-sampling output too, so groups must also divide num_classes.
    norm = _monai_norm(cfg.norm, math.gcd(MAX_GROUPS, cfg.base_filters, num_classes))
    net = MonaiUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=channels(cfg.base_filters, cfg.depth),
        strides=[2] * cfg.depth,
        num_res_units=2,  # two convolutions per level, as in our DoubleConv
        norm=norm,
        dropout=cfg.dropout,
    )
    return PadCrop(net, 2**cfg.depth)


def _build_monai_basicunet(cfg: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    from monai.networks.nets import BasicUNet

    _require(cfg, "depth", 4, "BasicUNet always has 4 down-sampling steps")
    _require(cfg, "first_kernel", 3, "BasicUNet uses 3x3 kernels")
    _require(cfg, "dilation", 1, "BasicUNet has no dilation")
    _require(cfg, "stem_stride", 1, "only our U-Net has a space-to-depth stem")
    features = (*channels(cfg.base_filters, 4), cfg.base_filters)
    net = BasicUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        features=features,
        norm=_monai_norm(cfg.norm, math.gcd(MAX_GROUPS, cfg.base_filters)),
        dropout=cfg.dropout,
    )
    return PadCrop(net, 2**cfg.depth)


def _build_monai_dynunet(cfg: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    from monai.networks.nets import DynUNet

    _require(cfg, "dilation", 1, "DynUNet has no dilation")
    _require(cfg, "stem_stride", 1, "only our U-Net has a space-to-depth stem")
    if cfg.norm == "none":
        raise ValueError(f"{cfg.name}: norm='none' is not supported; choose one of batch, instance, group")
    net = DynUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        kernel_size=kernel_sizes(cfg.first_kernel, cfg.depth),
        strides=[1] + [2] * cfg.depth,
        upsample_kernel_size=[2] * cfg.depth,
        filters=channels(cfg.base_filters, cfg.depth),
        dropout=cfg.dropout,
        norm_name=_monai_norm(cfg.norm, math.gcd(MAX_GROUPS, cfg.base_filters)),
    )
    return PadCrop(net, 2**cfg.depth)


def _monai_norm(norm: str, groups: int) -> str | tuple[str, dict[str, Any]] | None:
    return {
        "batch": "batch",
        "instance": ("instance", {"affine": True}),
        "group": ("group", {"num_groups": groups}),
        "none": None,
    }[norm]


_BUILDERS: dict[str, Callable[[ModelConfig, int, int], nn.Module]] = {
    "unet": _build_unet,
    "monai_unet": _build_monai_unet,
    "monai_basicunet": _build_monai_basicunet,
    "monai_dynunet": _build_monai_dynunet,
}
MODEL_NAMES = tuple(_BUILDERS)


def build_model(cfg: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    """Build the network ``cfg.name``: images (N, in_channels, H, W) -> logits (N, num_classes, H, W).

    MONAI networks get the same widths (``base_filters * 2**l``) and depth as
    ours; they apply ``dropout`` in every block, ours only in the deeper half.
    ``monai_unet`` down-samples with strided convolutions and has no
    full-resolution block, so it costs about a quarter of ``unet``'s compute.

    Raises:
        KeyError: unknown ``cfg.name``; the message lists the supported names.
        ValueError: a knob the chosen network does not support, or a bad channel count.
    """
    if cfg.name not in _BUILDERS:
        raise KeyError(f"unknown model {cfg.name!r}; supported models are {', '.join(MODEL_NAMES)}")
    _check_int("in_channels", in_channels, 1)
    _check_int("num_classes", num_classes, 1)
    model = _BUILDERS[cfg.name](cfg, in_channels, num_classes)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("built %s (%s): %d parameters", cfg.name, cfg.to_dict(), n_params)
    return model
