"""The model-input contract: how an image becomes what the network sees, in one place.

An image of any size is fitted into the training canvas ``size`` (height,
width) recorded in the checkpoint: scaled by the largest factor at which it
fits, its aspect ratio kept, and centred on a black canvas (``fit_pair``;
the ``Fit`` says where it lies). Scaling averages areas when it shrinks in
both directions (so speckle does not alias into moire) and is bilinear
otherwise; a label map is scaled with nearest neighbour, so it never gains
values, and padded with background. The network then gets (N, C, H, W)
float32 in [0, 1]. Predictions go back the same way (``Fit.unfit``): the
image's part of the canvas is cut out and scaled to the image's own size.
The augment stage fits every source before its random transforms, train
loads originals with it, and evaluate and predict
(``medseg.model.inference``) use it: they all see the same pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W[, C]) uint8 to (height, width): area averaging when shrinking, linear when enlarging."""
    h, w = size
    interp = cv2.INTER_AREA if image.shape[0] >= h and image.shape[1] >= w else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) label map to (height, width) with nearest neighbour: no new values."""
    return cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def as_hwc(image: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 1); (H, W, C) unchanged."""
    return image[..., None] if image.ndim == 2 else image


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


@dataclass(frozen=True)
class Fit:
    """Where an image of ``shape`` (height, width) lies on a canvas of ``size``: rows ``top:top+height``, ..."""

    shape: tuple[int, int]
    size: tuple[int, int]
    top: int
    left: int
    height: int
    width: int

    @classmethod
    def of(cls, shape: tuple[int, int], size: tuple[int, int]) -> Fit:
        scale = min(size[0] / shape[0], size[1] / shape[1])
        height = min(size[0], max(1, round(shape[0] * scale)))
        width = min(size[1], max(1, round(shape[1] * scale)))
        return cls(tuple(shape), tuple(size), (size[0] - height) // 2, (size[1] - width) // 2, height, width)

    def _place(self, scaled: np.ndarray) -> np.ndarray:
        if (self.height, self.width) == self.size:
            return scaled
        canvas = np.zeros((*self.size, *scaled.shape[2:]), scaled.dtype)
        canvas[self.top:self.top + self.height, self.left:self.left + self.width] = scaled
        return canvas

    def image(self, image: np.ndarray) -> np.ndarray:
        return self._place(resize_image(image, (self.height, self.width)))

    def label(self, label: np.ndarray) -> np.ndarray:
        return self._place(resize_label(label, (self.height, self.width)))

    def unfit(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, C, *size) canvas logits -> (N, C, *shape): the image's part, bilinearly scaled back."""
        part = logits[..., self.top:self.top + self.height, self.left:self.left + self.width]
        return F.interpolate(part, size=self.shape, mode="bilinear", align_corners=False)


def fit_pair(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image and label map fitted into the canvas ``size`` alike."""
    fit = Fit.of(image.shape[:2], size)
    return fit.image(image), fit.label(label)
