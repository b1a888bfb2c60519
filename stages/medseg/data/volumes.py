"""The geometry of the volumes a converted dataset was sliced from (``data/converted/<name>/volumes.json``).

Written by convert for the volume formats (``medseg.volumes``), beside the
manifest whose ``volume`` and ``slice`` columns name each image's volume
and slice; read by whatever stacks slices back into volumes (3D scores,
NIfTI predictions). One entry per volume:

- ``shape`` and ``affine``: the RAS grid the slices were cut from (after
  any in-plane resampling); ``spacing``: its (x, y, z) voxel size in mm;
- ``source_shape`` and ``source_affine``: the grid of the file as read, so
  a prediction can be written back on the input's own grid;
- ``slices``: the indices (along z, inferior to superior) written as images;
- ``source_image`` and ``source_labels``: the files, relative to the raw folder.

Pixel (row r, column c) of the image of slice k is voxel
``(shape[0] - 1 - c, shape[1] - 1 - r, k)``: rows run anterior to
posterior and columns from the patient's right to left, as radiologists
view an axial slice (``image_to_voxel``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medseg.io.errors import DataError
from medseg.io.tables import read_json, write_json

VOLUMES = "volumes.json"


@dataclass(frozen=True)
class VolumeGeometry:
    id: str
    shape: tuple[int, int, int]
    affine: tuple[tuple[float, ...], ...]  # 4 x 4, voxel index -> RAS mm
    spacing: tuple[float, float, float]
    source_shape: tuple[int, int, int]
    source_affine: tuple[tuple[float, ...], ...]
    slices: tuple[int, ...]
    source_image: str
    source_labels: tuple[str, ...]

    @property
    def affine_array(self) -> np.ndarray:
        return np.array(self.affine, dtype=float)


def image_to_voxel(slice_image: np.ndarray) -> np.ndarray:
    """An image (H, W[, C]) of one slice back to the volume's (x, y) voxel order, shape (W, H[, C])."""
    return np.swapaxes(slice_image, 0, 1)[::-1, ::-1]


def voxel_to_image(plane: np.ndarray) -> np.ndarray:
    """The inverse of ``image_to_voxel``: a (x, y[, C]) plane of the RAS volume as an image (rows, columns[, C])."""
    return np.swapaxes(plane[::-1, ::-1], 0, 1)


def write_volumes(out: Path, volumes: list[VolumeGeometry]) -> None:
    write_json(Path(out) / VOLUMES, {"volumes": [asdict(v) for v in sorted(volumes, key=lambda v: v.id)]})


def has_volumes(root: Path) -> bool:
    """Whether the converted dataset at ``root`` was sliced from volumes."""
    return (Path(root) / VOLUMES).is_file()


def read_volumes(root: Path) -> dict[str, VolumeGeometry]:
    """The geometry of every volume of the converted dataset at ``root``, by id."""
    path = Path(root) / VOLUMES
    if not path.is_file():
        raise DataError(path, "not found (a dataset converted from volumes has one; run the convert stage)")
    try:
        entries = [VolumeGeometry(**{k: _tuples(v) for k, v in entry.items()}) for entry in read_json(path)["volumes"]]
    except (KeyError, TypeError) as exc:
        raise DataError(path, f"not a volumes file: {exc}") from None
    return {v.id: v for v in entries}


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
