"""The strong view of unlabelled images for semi-supervised training: ultrasound perturbations, in torch.

``strong_view(x, cfg, generator)`` perturbs a batch ``x`` (N, C, H, W) float
in [0, 1], each sample's weak view, and returns a tensor of the same shape
in [0, 1]. It changes intensities only and never moves a pixel, so a
prediction on the weak view is a per-pixel target for the strong one
(``medseg.train.semi``). In the order the physics happens, as the augment
stage's transforms (``medseg.augment.transforms``), each firing per sample
with its probability:

- an acoustic shadow: the band below a random reflector, along the beam of a
  probe ``apex_above`` image heights above the image, darkened by a factor
  drawn from ``strength`` (the augment stage's ``shadow_factor``);
- speckle: multiplicative noise per pixel, uniform with std ``sigma``;
- gain and contrast: ``x * (1 + c) + b`` with ``c`` and ``b`` uniform within
  the limits; pixels that were black (outside the scanner's sector) stay black;
- gamma: ``x ** g``, ``g`` uniform within ``limits``.

Every draw comes from ``generator`` (a fixed number per sample, whether a
transform fires or not), so the same generator state gives the same tensor.
"""
from __future__ import annotations

import math

import torch

from medseg.augment.transforms import shadow_factor
from medseg.config import StrongView


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + torch.rand(n, generator=generator, dtype=torch.float64) * (high - low)


def _fires(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) < p


def shadows(n: int, shape: tuple[int, int], cfg: StrongView, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, H, W) intensity factors, 1 where a sample has no shadow."""
    height, width = shape
    shadow = cfg.shadow
    on = _fires(n, shadow.p, generator)
    x0 = _uniform(n, 0.2 * width, 0.8 * width, generator)  # the reflector lies where tissue usually is
    y0 = _uniform(n, 0.15 * height, 0.7 * height, generator)
    half = (_uniform(n, 0.3, 1.0, generator) * shadow.max_width * width / 2).clamp(min=1.0)
    darkening = _uniform(n, *shadow.strength, generator)
    factors = torch.ones(n, 1, height, width)
    for i in torch.nonzero(on).flatten().tolist():
        factors[i, 0] = torch.from_numpy(shadow_factor(shape, shadow.apex_above, float(x0[i]), float(y0[i]),
                                                       float(half[i]), float(darkening[i])))
    return factors


def strong_view(x: torch.Tensor, cfg: StrongView, generator: torch.Generator) -> torch.Tensor:
    """``x`` with a shadow, speckle, gain and gamma drawn per sample (see the module docstring)."""
    n, _, height, width = x.shape
    shape = (n, 1, 1, 1)
    factor = shadows(n, (height, width), cfg, generator)
    speckle_on = _fires(n, cfg.speckle.p, generator).view(shape)
    spread = math.sqrt(3) * cfg.speckle.sigma
    speckle = 1 + (torch.rand(n, 1, height, width, generator=generator) * 2 - 1) * spread * speckle_on
    gain_on = _fires(n, cfg.gain.p, generator).view(shape)
    contrast = 1 + _uniform(n, -cfg.gain.contrast, cfg.gain.contrast, generator).float().view(shape) * gain_on
    brightness = _uniform(n, -cfg.gain.brightness, cfg.gain.brightness, generator).float().view(shape) * gain_on
    gamma_on = _fires(n, cfg.gamma.p, generator).view(shape)
    gamma = torch.where(gamma_on, _uniform(n, *cfg.gamma.limits, generator).float().view(shape), 1.0)
    device = x.device
    out = x * factor.to(device) * speckle.to(device)
    out = torch.where(x > 0, out * contrast.to(device) + brightness.to(device), out).clamp(0, 1)
    return (out ** gamma.to(device)).clamp(0, 1).to(x.dtype)
