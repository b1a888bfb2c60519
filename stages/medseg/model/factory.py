"""The model factory: ``build_model(cfg, in_channels, num_classes)`` for every network name.

``cfg`` is a ``medseg.config.ModelConfig``; ``cfg.name`` picks our U-Net
(``medseg.model.unet``) or one of MONAI's networks, given the same widths
(``base_filters * 2**l``) and depth, so they can be compared side by side.
Every network maps images (N, in_channels, H, W) to logits
(N, num_classes, H, W) for any H and W (MONAI's through ``PadCrop``).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from torch import nn

from medseg.config import MODEL_NAMES, ModelConfig, unresolved

from .unet import MAX_GROUPS, PadCrop, UNet, channels, kernel_sizes

logger = logging.getLogger(__name__)


def _require(cfg: ModelConfig, option: str, allowed: Any, why: str) -> None:
    value = getattr(cfg, option)
    if value != allowed:
        raise ValueError(f"{cfg.name}: {option}={value!r} is not supported ({why}); set {option}: {allowed!r}")


def _build_unet(cfg: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    return UNet(cfg, in_channels, num_classes)


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


BUILDERS: dict[str, Callable[[ModelConfig, int, int], nn.Module]] = {
    "unet": _build_unet,
    "monai_unet": _build_monai_unet,
    "monai_basicunet": _build_monai_basicunet,
    "monai_dynunet": _build_monai_dynunet,
}
assert set(BUILDERS) == set(MODEL_NAMES), "every model name the schema allows needs a builder"


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")


def build_model(cfg: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    """Build the network ``cfg.name``: images (N, in_channels, H, W) -> logits (N, num_classes, H, W).

    MONAI networks get the same widths (``base_filters * 2**l``) and depth as
    ours; they apply ``dropout`` in every block, ours only in the deeper half.
    ``monai_unet`` down-samples with strided convolutions and has no
    full-resolution block, so it costs about a quarter of ``unet``'s compute.

    ``cfg`` is validated by its schema; what is checked here is what only
    the chosen network restricts (MONAI's fixed kernels, depth or norms).

    Raises:
        KeyError: unknown ``cfg.name``; the message lists the supported names.
        ValueError: a knob the chosen network does not support, or a bad channel count.
    """
    left = unresolved(cfg)
    if left:
        raise ValueError(f"model knobs {left} are 'auto': the plan stage fills them in per dataset "
                         "(dvc repro plan@<name>); set them to build a model directly")
    if cfg.name not in BUILDERS:
        raise KeyError(f"unknown model {cfg.name!r}; supported models are {', '.join(BUILDERS)}")
    _check_count("in_channels", in_channels)
    _check_count("num_classes", num_classes)
    model = BUILDERS[cfg.name](cfg, in_channels, num_classes)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("built %s (%s): %d parameters", cfg.name, cfg.model_dump(), n_params)
    return model
