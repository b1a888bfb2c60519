"""Seeded random transforms for ultrasound-like images, image and mask moved alike.

``build_transform(cfg)`` is one albumentations pipeline: geometry applied to
image and mask together (flip, affine, elastic, grid; nearest neighbour for
the mask, constant black borders), then intensity changes on the image only,
in the order the physics happens (an acoustic shadow, speckle, blur, gain,
gamma). ``augment_sample`` runs it with every random draw fixed by a seed;
``sample_seed(seed, source id, copy)`` derives that seed with SHA-256, so a
sample does not depend on the worker count or the order of work.
"""
from __future__ import annotations

import hashlib
import math
import random
from typing import Any, NamedTuple

import albumentations as A
import cv2
import numpy as np

from medseg.config import AugmentConfig


class AcousticShadow(A.ImageOnlyTransform):
    """Darken a band that runs from a random point down along the beam.

    Bone, gas and calcifications reflect almost all sound, so the tissue
    behind them (deeper, i.e. further down the image) shows dark. The band
    follows a ray from a virtual probe apex ``apex_above`` image heights above
    the top centre (a convex probe's fan; a large value gives the parallel
    beams of a linear probe) and widens with depth like the fan does. Rows at
    or above the start point are left untouched.
    """

    def __init__(self, *, max_width: float, strength: tuple[float, float], apex_above: float, p: float) -> None:
        super().__init__(p=p)
        if not 0 < max_width <= 1:
            raise ValueError(f"max_width must be in (0, 1], got {max_width}")
        if not 0 <= strength[0] <= strength[1] <= 1:
            raise ValueError(f"strength must be (low, high) with 0 <= low <= high <= 1, got {strength}")
        if apex_above <= 0:
            raise ValueError(f"apex_above must be positive, got {apex_above}")
        self.max_width = max_width
        self.strength = tuple(strength)
        self.apex_above = apex_above

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        rng = self.py_random
        # Start inside the central region, where the imaged tissue usually is.
        return {
            "x0": rng.uniform(0.2, 0.8) * width,
            "y0": rng.uniform(0.15, 0.7) * height,
            "half_width": max(1.0, rng.uniform(0.3, 1.0) * self.max_width * width / 2),
            "darkening": rng.uniform(*self.strength),
        }

    def apply(
        self, img: np.ndarray, x0: float, y0: float, half_width: float, darkening: float, **params: Any
    ) -> np.ndarray:
        factor = shadow_factor(img.shape[:2], self.apex_above, x0, y0, half_width, darkening)
        top = math.floor(y0) + 1
        out = img.copy()
        below = img[top:].astype(np.float32)
        scale = factor[top:, :, None] if img.ndim == 3 else factor[top:]
        out[top:] = np.clip(np.rint(below * scale), 0, 255).astype(img.dtype)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_width", "strength", "apex_above")


class SectorBrightnessContrast(A.RandomBrightnessContrast):
    """``RandomBrightnessContrast`` that leaves pure black pixels black.

    Scanners blank everything outside the imaged sector (fundus cameras
    outside the field of view); the library's additive brightness would lift
    that frame to grey, a cue that never occurs in real images.
    """

    def apply(self, img: np.ndarray, *args: Any, **params: Any) -> np.ndarray:
        black = img == 0
        out = super().apply(img, *args, **params)
        out[black] = 0
        return out


def shadow_factor(
    shape: tuple[int, int], apex_above: float, x0: float, y0: float, half_width: float, darkening: float
) -> np.ndarray:
    """Per-pixel intensity factor (1 = unchanged) of a shadow starting at ``(x0, y0)``."""
    height, width = shape
    apex_x, apex_y = width / 2, -apex_above * height
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # Depth along the ray relative to the start point: the band widens with it.
    spread = (ys - apex_y) / (y0 - apex_y)
    ray_x = apex_x + (x0 - apex_x) * spread
    lateral = np.abs(xs - ray_x) / (half_width * spread)
    # Flat core, soft edges: real shadows are not cut with a knife.
    across = np.clip((1.0 - lateral) / 0.3, 0.0, 1.0)
    # Fade in over a few rows below the reflector instead of a hard step.
    onset = np.clip((ys - y0) / max(2.0, 0.03 * height), 0.0, 1.0)
    return 1.0 - darkening * across * onset


def build_transform(cfg: AugmentConfig, record: bool = False) -> A.Compose:
    """The random transforms for ``cfg``; call them via ``augment_sample`` on a resized source.

    ``record`` makes ``augment_sample`` report which transforms fired (for
    the preview); it does not change the output.

    Sources are resized to ``cfg.size`` first (``medseg.data.preprocess``),
    so pixel-valued parameters (elastic alpha and sigma, blur kernel) mean the
    same for every dataset, and the costly warps run on the small size.
    """
    # Constant 0 borders: black is what an ultrasound scanner shows outside
    # the fan, and 0 is background in every label map. Nearest neighbour
    # moves every label value, the ignore label (255) included, unchanged:
    # never a value in between. New border pixels are background, not
    # ignore: they are black padding, known to hold no structure, as the
    # canvas padding of medseg.data.preprocess is.
    border = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}
    nearest = {"mask_interpolation": cv2.INTER_NEAREST}
    rs, sp = cfg.rotate_scale, cfg.speckle
    geometric = [
        A.HorizontalFlip(p=cfg.hflip.p),
        A.Affine(
            rotate=(-rs.rotate_deg, rs.rotate_deg),
            scale=(1 - rs.scale, 1 + rs.scale),
            translate_percent=(-rs.shift, rs.shift),
            p=rs.p,
            **border,
            **nearest,
        ),
        # Uniform noise keeps Simard et al.'s meaning of alpha (pixels);
        # albumentations' default Gaussian noise is max-normalised, which
        # shrinks the displacement about 2.5x.
        A.ElasticTransform(
            alpha=cfg.elastic.alpha, sigma=cfg.elastic.sigma, noise_distribution="uniform",
            p=cfg.elastic.p, **border, **nearest,
        ),
        A.GridDistortion(
            num_steps=cfg.grid.num_steps, distort_limit=cfg.grid.distort_limit, p=cfg.grid.p, **border, **nearest
        ),
    ]
    # Image-only, in the order the physics happens: attenuation in tissue,
    # speckle and beam blur at image formation, then the display's gain and gamma.
    intensity = [
        AcousticShadow(max_width=cfg.shadow.max_width, strength=cfg.shadow.strength,
                       apex_above=cfg.shadow.apex_above, p=cfg.shadow.p),
        # Uniform on [1 - a, 1 + a] has standard deviation a / sqrt(3).
        A.MultiplicativeNoise(multiplier=(1 - math.sqrt(3) * sp.sigma, 1 + math.sqrt(3) * sp.sigma),
                              elementwise=True, per_channel=False, p=sp.p),
        A.GaussianBlur(blur_limit=(3, cfg.blur.max_kernel), p=cfg.blur.p),
        SectorBrightnessContrast(brightness_limit=cfg.gain.brightness, contrast_limit=cfg.gain.contrast,
                                 p=cfg.gain.p),
        A.RandomGamma(gamma_limit=(cfg.gamma.limits[0] * 100, cfg.gamma.limits[1] * 100), p=cfg.gamma.p),
    ]
    return A.Compose(geometric + intensity, mask_interpolation=cv2.INTER_NEAREST, save_applied_params=record)


def sample_seed(seed: int, source_id: str, copy: int) -> int:
    """A 64-bit seed stable across processes and Python runs (unlike ``hash()``)."""
    digest = hashlib.sha256(f"{seed}\x00{source_id}\x00{copy}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class Augmented(NamedTuple):
    image: np.ndarray  # (h, w, C) uint8
    label: np.ndarray  # (h, w) uint8
    applied: tuple[str, ...]  # transforms that fired, when the pipeline records them


def augment_sample(transform: A.Compose, image: np.ndarray, label: np.ndarray, seed: int) -> Augmented:
    """Apply ``transform`` with its randomness fixed by ``seed``.

    ``image`` is (h, w) or (h, w, C) uint8 at the training size, ``label``
    (h, w) uint8; a 2-D image comes back as (h, w, 1).
    """
    # Compose(seed=...) and set_random_seed give every transform its own
    # generator with the same seed, so equal-p transforms fire together (all
    # or none). One shared generator makes their draws independent.
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = transform(image=image, mask=label)
    channels = 1 if image.ndim == 2 else image.shape[2]
    new_image = out["image"].reshape(*out["image"].shape[:2], channels)
    applied = tuple(name for name, _ in out.get("applied_transforms", ()))
    return Augmented(new_image, out["mask"], applied)
