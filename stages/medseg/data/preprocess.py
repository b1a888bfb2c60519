"""The model-input contract: how an image becomes what the network sees, in one place.

An image of any size is resized to the training ``size`` (height, width)
recorded in the checkpoint: area averaging when it shrinks in both
directions (so speckle does not alias into moire), bilinear otherwise; a
label map is resized with nearest neighbour, so it never gains values. The
network then gets (N, C, H, W) float32 in [0, 1]. The augment stage resizes
every source with ``resize_pair`` before its random transforms, train loads
originals with it, and evaluate and predict (``medseg.model.inference``)
use ``resize_image`` and ``to_tensor``: train, evaluate and predict see the
same pixels.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W[, C]) uint8 to (height, width): area averaging when shrinking, linear when enlarging."""
    h, w = size
    interp = cv2.INTER_AREA if image.shape[0] >= h and image.shape[1] >= w else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) label map to (height, width) with nearest neighbour: no new values."""
    return cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def resize_pair(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return resize_image(image, size), resize_label(label, size)


def as_hwc(image: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 1); (H, W, C) unchanged."""
    return image[..., None] if image.ndim == 2 else image


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
