"""Pictures for people: label overlays, captions, legends and grids.

All functions take and return RGB uint8 arrays (write them with
``medseg.io.images.write_png``). Used by the augment preview, the training
progress pictures, the evaluation overlays and ``predict``.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from medseg.data.converted import IGNORE

# RGB per label value; background is never tinted; ignored pixels (the ignore label) are white.
_IGNORED = (255, 255, 255)
_PALETTE = ((0, 0, 0), (255, 200, 0), (60, 220, 80), (255, 60, 60), (40, 160, 255), (220, 80, 220), (0, 200, 200))


def class_colour(value: int) -> tuple[int, int, int]:
    if value == IGNORE:
        return _IGNORED
    if value < len(_PALETTE):
        return _PALETTE[value]
    hue = (value * 47) % 180  # spread further classes around the hue circle
    return tuple(int(c) for c in cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2RGB)[0, 0])


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) uint8 -> (H, W, 3)."""
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    grey = image[..., 0] if image.ndim == 3 else image
    return np.repeat(grey[..., None], 3, axis=2)


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """``image`` with each foreground class tinted and outlined in its colour."""
    rgb = to_rgb(image)
    tinted = rgb.copy()
    values = [int(v) for v in np.unique(label) if v > 0]
    for value in values:
        tinted[label == value] = class_colour(value)
    out = cv2.addWeighted(rgb, 1 - alpha, tinted, alpha, 0)
    for value in values:
        contours, _ = cv2.findContours((label == value).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, class_colour(value), 1)
    return out


def caption(tile: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the top-left corner, readable on any background."""
    tile = np.ascontiguousarray(tile)
    cv2.putText(tile, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def legend(classes: Sequence[str], width: int) -> np.ndarray:
    """A white bar naming each foreground class next to its colour."""
    bar = np.full((22, width, 3), 255, np.uint8)
    x = 6
    for value, name in enumerate(classes[1:], start=1):
        cv2.rectangle(bar, (x, 5), (x + 12, 17), class_colour(value), -1)
        cv2.putText(bar, name, (x + 16, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x += 16 + 9 * len(name) + 14
    return bar


def grid(rows: Sequence[Sequence[np.ndarray]], classes: Sequence[str] | None = None) -> np.ndarray:
    """Stack rows of equally sized RGB tiles (short rows are padded) and add a legend."""
    width = max(len(r) for r in rows)
    h, w = rows[0][0].shape[:2]
    blank = np.zeros((h, w, 3), np.uint8)
    picture = np.vstack([np.hstack(list(r) + [blank] * (width - len(r))) for r in rows])
    if classes is not None:
        picture = np.vstack([picture, legend(classes, picture.shape[1])])
    return picture


def tile(image: np.ndarray, size: tuple[int, int] = (192, 256)) -> np.ndarray:
    """Resize an RGB picture to a fixed (height, width) tile for a grid."""
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
