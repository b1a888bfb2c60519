"""From a RAS volume to 2D images: HU window, in-plane resampling, slice selection, 2.5D stacks.

- ``window``: HU onto 0..255, clipped outside the window.
- ``InPlaneGrid``: the (x, y) grid slices are resampled to for a target
  spacing, and the affine of the resampled volume (the field of view is
  kept; pixel centres follow OpenCV's ``resize``); labels on it back on the
  source grid (``label_back``, for predictions).
- ``select_slices``: every slice with foreground, plus a share of the empty
  ones drawn by a generator seeded from params and the volume id, so the
  choice depends on neither worker count nor order.
- ``stack_indices``: the slices that form one image (2.5D: the neighbours,
  repeated at the volume's ends).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np


def window(hu: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low`` HU -> 0, ``high`` HU -> 255, linear between, clipped outside; uint8."""
    scaled = (hu.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


@dataclass(frozen=True)
class InPlaneGrid:
    """Slices of ``source`` (x, y) voxels resampled to ``size`` (x, y) voxels."""

    source: tuple[int, int]
    size: tuple[int, int]

    @classmethod
    def for_spacing(cls, shape: tuple[int, int], spacing: tuple[float, float],
                    target: tuple[float, float] | None) -> InPlaneGrid:
        if target is None:
            return cls(shape, shape)
        size = tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))
        return cls(shape, size)

    @property
    def resampled(self) -> bool:
        return self.size != self.source

    def affine(self, affine: np.ndarray) -> np.ndarray:
        """The affine of the resampled volume: voxel i' lies where source voxel f * i' + (f - 1) / 2 did."""
        out = np.array(affine, dtype=float)
        for axis in (0, 1):
            factor = self.source[axis] / self.size[axis]
            out[:3, 3] += affine[:3, axis] * (factor - 1) / 2
            out[:3, axis] = affine[:3, axis] * factor
        return out

    def image(self, plane: np.ndarray) -> np.ndarray:
        """An (x, y) plane of HU, linearly interpolated (area-averaged where it shrinks)."""
        if not self.resampled:
            return plane
        shrinks = self.size[0] * self.size[1] < self.source[0] * self.source[1]
        return cv2.resize(plane.astype(np.float32), self.size[::-1],
                          interpolation=cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR)

    def label(self, plane: np.ndarray) -> np.ndarray:
        """An (x, y) plane of class indices, nearest neighbour."""
        if not self.resampled:
            return plane
        return cv2.resize(plane, self.size[::-1], interpolation=cv2.INTER_NEAREST)

    def label_back(self, plane: np.ndarray) -> np.ndarray:
        """An (x, y) plane of class indices on the resampled grid back on the source grid, nearest neighbour.

        Each source voxel takes the resampled voxel whose cell holds its centre (the grids of ``affine``), so
        without resampling this is the identity.
        """
        if not self.resampled:
            return plane
        index = [np.minimum(((np.arange(n) + 0.5) * m / n).astype(int), m - 1)
                 for n, m in zip(self.source, self.size, strict=True)]
        return plane[np.ix_(*index)]


def slice_rng(seed: int, volume_id: str) -> np.random.Generator:
    # SeedSequence takes non-negative entropy only; the sign is a word of its own.
    return np.random.default_rng(np.random.SeedSequence([abs(seed), int(seed < 0), zlib.crc32(volume_id.encode())]))


def select_slices(label: np.ndarray, empty_fraction: float, rng: np.random.Generator) -> tuple[list[int], int]:
    """Indices along z of the slices kept (sorted) and how many of them have no foreground."""
    has_foreground = label.reshape(-1, label.shape[2]).any(axis=0)
    foreground = np.flatnonzero(has_foreground)
    empty = np.flatnonzero(~has_foreground)
    drawn = rng.choice(empty, size=round(empty_fraction * len(empty)), replace=False) if len(empty) else empty
    return sorted(int(k) for k in np.concatenate([foreground, drawn])), len(drawn)


def stack_indices(k: int, depth: int, slices_per_image: int) -> list[int]:
    """The z indices of slice ``k``'s channels: ``k`` alone, or ``k - 1, k, k + 1`` clamped to the volume."""
    half = slices_per_image // 2
    return [min(max(j, 0), depth - 1) for j in range(k - half, k + half + 1)]
