"""Read a NIfTI volume (``.nii``, ``.nii.gz``) onto the RAS grid, through nibabel.

The stored values come with the header's scaling applied (``scl_slope``,
``scl_inter``), so a CT holds HU. A file that is not NIfTI, truncated, or
not 3D is a ``DataError`` naming it.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.io.errors import DataError
from medseg.io.images import display_path

from .volume import Volume, to_ras

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ERRORS = (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error)


def nifti_shape(path: Path) -> tuple[int, ...]:
    """The array shape the header of ``path`` gives (a 4th axis: several values per voxel)."""
    try:
        return tuple(int(n) for n in nib.load(path).shape)
    except _ERRORS as exc:
        raise DataError(display_path(path), f"not a readable NIfTI volume: {exc}") from None


def read_nifti(path: Path) -> Volume:
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except _ERRORS as exc:
        raise DataError(display_path(path), f"not a readable NIfTI volume: {exc}") from None
    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        data = data.reshape(data.shape[:3])  # a 3D scan stored with trailing unit axes
    return to_ras(data, image.affine, path)
