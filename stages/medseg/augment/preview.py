"""The augment stage's preview: a few sources and their variants, each with its mask overlaid.

One row per source (one of each image class first): the resized original,
then up to five variants captioned with the transforms that fired, and a
legend of class colours below, so a person can check in one look that masks
follow their images and that the transforms look like real scans.
"""
from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np

from medseg.config import AugmentConfig
from medseg.data.converted import SampleFiles
from medseg.data.preprocess import fit_pair
from medseg.figures.overlay import caption, grid, overlay

from .transforms import augment_sample, sample_seed

_SHORT_NAMES = {
    "HorizontalFlip": "flip", "Affine": "affine", "ElasticTransform": "elastic", "GridDistortion": "grid",
    "AcousticShadow": "shadow", "MultiplicativeNoise": "speckle", "GaussianBlur": "blur",
    "SectorBrightnessContrast": "gain", "RandomGamma": "gamma",
}
_LINE_HEIGHT = 14  # pixels per caption line of figures.caption


def _captioned(tile: np.ndarray, words: Sequence[str]) -> np.ndarray:
    """Caption ``tile`` with ``words``, wrapped to the tile's width."""
    lines: list[str] = []
    for word in words:
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(candidate, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] <= tile.shape[1] - 8:
            lines[-1] = candidate
        else:
            lines.append(word)
    for row, text in enumerate(lines):
        # caption() writes at the top left of the array it is given; a view
        # starting lower down puts the line there, drawn into ``tile`` itself.
        caption(tile[_LINE_HEIGHT * row:], text)
    return tile


def preview_sources(sources: Sequence[SampleFiles], rows: int = 4) -> list[SampleFiles]:
    """Up to ``rows`` sources, one per image class first, so every kind of image is shown."""
    chosen: dict[str, SampleFiles] = {}
    for source in sources:
        chosen.setdefault(source.image_class, source)
    picked = sorted(chosen.values(), key=lambda s: s.id)[:rows]
    extra = [s for s in sources if s not in picked]
    return picked + extra[: rows - len(picked)]


def render_preview(sources: Sequence[SampleFiles], classes: Sequence[str], cfg: AugmentConfig,
                   transform: A.Compose, rows: int = 4, columns: int = 5) -> np.ndarray:
    """The preview picture (RGB); ``transform`` must record what fired (``build_transform(cfg, record=True)``)."""
    grid_rows = []
    for source in preview_sources(sources, rows):
        image, label = fit_pair(*source.read(), cfg.size)
        tiles = [_captioned(overlay(image, label), [source.id, f"({source.image_class})"])]
        for copy in range(min(columns, cfg.copies)):
            sample = augment_sample(transform, image, label, sample_seed(cfg.seed, source.id, copy))
            names = [_SHORT_NAMES[n] for n in sample.applied if n in _SHORT_NAMES]
            tiles.append(_captioned(overlay(sample.image, sample.label), [f"aug{copy:02d}:", *names]))
        grid_rows.append(tiles)
    if not grid_rows:
        return grid([[np.zeros((*cfg.size, 3), np.uint8)]], classes)
    return grid(grid_rows, classes)
