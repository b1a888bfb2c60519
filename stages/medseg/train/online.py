"""Online augmentation: random transforms of every training batch, in torch, seeded per step.

``augment_batch(x, y, cfg, generator)`` transforms a batch of images
``x`` (N, C, H, W) float in [0, 1] and label maps ``y`` (N, H, W) long:

- geometry, image and labels alike: a mirror, a rotation and a zoom, one
  affine warp per sample (bilinear for the image, nearest for the labels, so
  no label value is invented and the ignore label stays ignore; outside the
  image is black and background);
- intensity, image only: brightness, contrast, gamma, additive Gaussian noise.

Every draw comes from ``generator``, which ``Batches`` seeds once from
(seed, process rank) and draws from in step order, so a run is reproducible
and independent of what else draws random numbers. Each sample is transformed with probability ``cfg.p``. These add to
the offline copies of the augment stage (elastic, grid, speckle, shadow):
those are expensive and fixed, these are cheap and new at every step.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medseg.config import OnlineAugment


def _uniform(n: int, limit: float, generator: torch.Generator) -> torch.Tensor:
    """n draws from U(-limit, limit)."""
    return (torch.rand(n, generator=generator) * 2 - 1) * limit


def augment_batch(x: torch.Tensor, y: torch.Tensor, cfg: OnlineAugment,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch with each sample transformed with probability ``cfg.p`` (see the module docstring)."""
    n = x.shape[0]
    on = torch.rand(n, generator=generator) < cfg.p
    angle = _uniform(n, math.radians(cfg.rotate_deg), generator) * on
    zoom = 1 + _uniform(n, cfg.scale, generator) * on
    mirror = torch.where((torch.rand(n, generator=generator) < 0.5) & on & cfg.flip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / zoom * mirror
    theta[:, 0, 1] = -torch.sin(angle) / zoom
    theta[:, 1, 0] = torch.sin(angle) / zoom * mirror
    theta[:, 1, 1] = torch.cos(angle) / zoom
    if bool(on.any()):
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        y = F.grid_sample(y[:, None].to(x.dtype), grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)[:, 0].round().long()
    shape = (n, 1, 1, 1)
    gate = on.view(shape).to(x.dtype)
    brightness = _uniform(n, cfg.brightness, generator).view(shape) * gate
    contrast = 1 + _uniform(n, cfg.contrast, generator).view(shape) * gate
    gamma = torch.exp(_uniform(n, cfg.gamma, generator).view(shape) * gate)
    sigma = torch.rand(n, generator=generator).view(shape) * cfg.noise * gate
    noise = torch.randn(x.shape, generator=generator) * sigma
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    changed = ((((x - mean) * contrast + mean + brightness).clamp(0, 1) ** gamma) + noise.to(x.device)).clamp(0, 1)
    return torch.where(gate.bool(), changed, x), y
