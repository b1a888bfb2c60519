"""Schema of ``augment``: offline augmented copies, their size, and each transform's knobs.

Every transform has a probability ``p``; geometric ones move image and mask
together, intensity ones touch the image only (see ``medseg.augment``).
"""
from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import AfterValidator, Field, PositiveFloat

from .base import Auto, Strict, planned

T = TypeVar("T")
Fraction = Annotated[float, Field(ge=0, le=1)]


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise ValueError(f"low ({pair[0]}) must not exceed high ({pair[1]})")
    return pair


# A (low, high) range of values of type T, low <= high.
Interval = Annotated[tuple[T, T], AfterValidator(_ordered)]


def probability(default: float):
    """A transform's probability of firing: a field in [0, 1]."""
    return Field(default, ge=0.0, le=1.0, description="probability that the transform fires")


class HFlip(Strict):
    p: float = probability(0.5)


class RotateScale(Strict):
    p: float = probability(0.6)
    rotate_deg: float = Field(10.0, ge=0, le=180, description="largest rotation either way, degrees")
    scale: float = Field(0.1, ge=0, lt=1, description="largest zoom in or out, a fraction")
    shift: float = Field(0.05, ge=0, lt=0.5, description="largest translation, a fraction of the size")


class Elastic(Strict):
    p: float = probability(0.3)
    alpha: float = Field(30.0, ge=0, description="displacement scale, pixels at the training size")
    sigma: float = Field(6.0, gt=0, description="smoothness of the displacement field, pixels")


class GridDistort(Strict):
    p: float = probability(0.2)
    num_steps: int = Field(5, ge=1, description="grid cells per side")
    distort_limit: float = Field(0.2, ge=0, lt=1, description="largest move of a grid line, a fraction")


class Speckle(Strict):
    p: float = probability(0.5)
    # Uniform multiplicative noise with std sigma spans 1 +- sqrt(3) sigma;
    # above 1/sqrt(3) it would flip intensities negative.
    sigma: float = Field(0.15, ge=0, lt=0.577, description="std of multiplicative noise")


class GainContrast(Strict):
    p: float = probability(0.5)
    brightness: float = Field(0.15, ge=0, le=1, description="largest additive change, a fraction of 255")
    contrast: float = Field(0.2, ge=0, le=1, description="largest change of contrast, a fraction")


class Gamma(Strict):
    p: float = probability(0.3)
    limits: Interval[PositiveFloat] = Field((0.8, 1.25), description="(smallest, largest) gamma; 1 = unchanged")


class Blur(Strict):
    p: float = probability(0.2)
    max_kernel: int = Field(5, ge=3, description="largest Gaussian blur kernel, pixels")


class Shadow(Strict):
    """Acoustic shadow: a darkened band below a point, along the beam direction."""

    p: float = probability(0.3)
    max_width: float = Field(0.15, gt=0, le=1, description="fraction of image width")
    strength: Interval[Fraction] = Field((0.5, 0.9), description="darkening range, 0 = none, 1 = black")
    apex_above: float = Field(0.5, gt=0, description="probe apex above the image top, in image heights (a large "
                                                     "value gives a linear probe's parallel beams)")


class AugmentConfig(Strict):
    copies: int = Field(3, ge=0, le=100, description="augmented copies per source image")
    size: tuple[int, int] | Auto = planned("training canvas (height, width): every image is resized to fit it, "
                                           "aspect ratio kept, and padded")
    seed: int = 2026
    workers: int = Field(2, ge=1)
    shard_size: int = Field(512, ge=1, description="samples per array shard")
    hflip: HFlip = HFlip()
    rotate_scale: RotateScale = RotateScale()
    elastic: Elastic = Elastic()
    grid: GridDistort = GridDistort()
    speckle: Speckle = Speckle()
    gain: GainContrast = GainContrast()
    gamma: Gamma = Gamma()
    blur: Blur = Blur()
    shadow: Shadow = Shadow()
