"""A scan volume on a RAS grid: voxels, the affine, and the grid of the file it came from.

Every reader returns a ``Volume`` reoriented to RAS (array axes x, y, z
increase towards the patient's right, anterior and superior; nibabel's
orientation tools decide the flips and axis swaps, so nothing is
resampled), and keeps the shape and affine of the file as read, to write
results back on the input's own grid (``from_ras``, the exact inverse of
``to_ras``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel.orientations as orientations
import numpy as np

from medseg.io.errors import DataError
from medseg.io.images import display_path

RAS = orientations.axcodes2ornt("RAS")


@dataclass(frozen=True)
class Volume:
    data: np.ndarray  # (x, y, z) on the RAS grid
    affine: np.ndarray  # 4 x 4: voxel index -> RAS mm
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    path: Path

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (x, y, z) in mm."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)


def to_ras(data: np.ndarray, affine: np.ndarray, path: Path) -> Volume:
    """``data`` (i, j, k) with ``affine`` (voxel -> RAS mm) as a ``Volume`` whose axes are RAS.

    Flips and transposes only, so the array is a view of ``data``.
    """
    affine = np.asarray(affine, dtype=float)
    if data.ndim != 3:
        raise DataError(display_path(path), f"expected a 3D volume, got shape {data.shape}")
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(display_path(path), f"the voxel-to-world affine is degenerate: {affine.tolist()}")
    ornt = orientations.io_orientation(affine)
    ras = orientations.apply_orientation(data, ornt)
    ras_affine = affine @ orientations.inv_ornt_aff(ornt, data.shape)
    return Volume(ras, ras_affine, tuple(int(n) for n in data.shape), affine, Path(path))


def from_ras(data: np.ndarray, source_affine: np.ndarray) -> np.ndarray:
    """A (x, y, z) array on the RAS grid ``to_ras`` made from a file with ``source_affine``, back in the file's
    own axis order and directions: ``from_ras(to_ras(d, a, p).data, a)`` equals ``d``."""
    ornt = orientations.io_orientation(np.asarray(source_affine, dtype=float))
    return orientations.apply_orientation(data, orientations.ornt_transform(RAS, ornt))


def grid_problem(volume: Volume, reference: Volume, tolerance_mm: float) -> str | None:
    """Why ``volume`` (a label or mask) does not lie on the grid of ``reference`` (its image), or None."""
    if volume.source_shape != reference.source_shape:
        return (f"is {_size(volume.source_shape)} voxels but image {display_path(reference.path.name)} is "
                f"{_size(reference.source_shape)}")
    corners = np.array([[i, j, k, 1] for i in (0, volume.source_shape[0] - 1) for j in (0, volume.source_shape[1] - 1)
                        for k in (0, volume.source_shape[2] - 1)], dtype=float).T
    # Corner positions, not affine entries: how far apart the two grids lie, in mm.
    apart = np.abs(volume.source_affine @ corners - reference.source_affine @ corners).max()
    if apart > tolerance_mm:
        return (f"lies up to {apart:.4g} mm away from image {display_path(reference.path.name)}'s grid "
                f"(volume.affine_tolerance {tolerance_mm} mm): affine {_rounded(volume.source_affine)} vs "
                f"{_rounded(reference.source_affine)}")
    return None


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def _rounded(affine: np.ndarray) -> list:
    return np.round(affine[:3], 3).tolist()
