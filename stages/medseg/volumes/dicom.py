"""Read one DICOM series folder (one file per slice) into a ``Volume``, through pydicom.

Slices are ordered by InstanceNumber, or where a file lacks it by the
number that ends its file name (3D-IRCADb's ``image_0 .. image_118``),
never by name order. The numbers must run without gaps or repeats, the
slices must share one size, orientation and pixel spacing, and with
``modality`` set every slice must be of that modality. Pixel values are
rescaled by each slice's RescaleSlope and RescaleIntercept (HU for CT).

Geometry: DICOM positions are in LPS (x to the patient's left, y
posterior); the affine is built from ImageOrientationPatient (axial if
absent), PixelSpacing and the slice step, then flipped to RAS. The slice
step is the mean step between the slices' ImagePositionPatient, or where
those are absent or all equal, SpacingBetweenSlices (else SliceThickness)
along the slice normal, the slices following instance order.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from medseg.io.errors import DataError
from medseg.io.images import display_path

from .volume import Volume, to_ras

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_TRAILING_NUMBER = re.compile(r"(\d+)$")
_EVEN = 0.01  # slice steps may differ from their mean by this share of it (rounding in the headers)


@dataclass(frozen=True)
class _Slice:
    path: Path
    ds: pydicom.Dataset
    number: int


def read_series(folder: Path, modality: str | None = None) -> Volume:
    """The series in ``folder`` as a RAS ``Volume`` of float32 values (HU for CT)."""
    slices = _ordered(_read_files(Path(folder)))
    _check_numbers(slices, folder)
    _check_same(slices, modality)
    pixels = np.stack([_pixels(s) for s in slices], axis=-1)  # (rows, columns, slices)
    affine = LPS_TO_RAS @ _lps_affine(slices, folder)
    # Voxel (i, j, k) is column i, row j of slice k, as ImageOrientationPatient describes them.
    return to_ras(pixels.transpose(1, 0, 2), affine, folder)


def _read_files(folder: Path) -> list[tuple[Path, pydicom.Dataset]]:
    if not folder.is_dir():
        raise DataError(display_path(folder), "series folder not found")
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise DataError(display_path(folder), "no DICOM files in the series folder")
    read = []
    for path in files:
        try:
            read.append((path, pydicom.dcmread(path)))
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise DataError(display_path(path), f"not a readable DICOM file: {exc}") from None
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in read}
    if len(series) > 1:
        raise DataError(display_path(folder), f"holds {len(series)} series (SeriesInstanceUID differs); "
                                              "give each series its own folder")
    return read


def _ordered(read: list[tuple[Path, pydicom.Dataset]]) -> list[_Slice]:
    """By InstanceNumber where every slice has one, else by the number ending each file name."""
    if all(ds.get("InstanceNumber") not in (None, "") for _, ds in read):
        slices = [_Slice(path, ds, int(ds.InstanceNumber)) for path, ds in read]
    else:
        slices = []
        for path, ds in read:
            match = _TRAILING_NUMBER.search(path.name)
            if match is None:
                raise DataError(display_path(path), "no InstanceNumber, and no number ending the file name, to "
                                                    "order the slice by")
            slices.append(_Slice(path, ds, int(match.group(1))))
    return sorted(slices, key=lambda s: s.number)


def _check_numbers(slices: list[_Slice], folder: Path) -> None:
    for before, after in zip(slices, slices[1:], strict=False):
        if after.number == before.number:
            raise DataError(display_path(after.path), f"slice number {after.number} repeats that of "
                                                      f"{display_path(before.path.name)}")
        if after.number != before.number + 1:
            missing = list(range(before.number + 1, after.number))
            shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
            raise DataError(display_path(folder), f"{len(missing)} slice(s) missing: number(s) {shown} between "
                                                  f"{before.path.name} and {after.path.name}")


def _check_same(slices: list[_Slice], modality: str | None) -> None:
    first = slices[0]
    for s in slices:
        if modality is not None and str(s.ds.get("Modality", "")) != modality:
            raise DataError(display_path(s.path), f"modality is {str(s.ds.get('Modality', '')) or 'not given'!r} "
                                                  f"but the profile expects {modality} (volume.modality: the HU "
                                                  "window needs CT values)")
        if (s.ds.get("Rows"), s.ds.get("Columns")) != (first.ds.get("Rows"), first.ds.get("Columns")):
            raise DataError(display_path(s.path), f"slice is {_size(s.ds)} pixels but {first.path.name} is "
                                                  f"{_size(first.ds)}; the slices of a series must share one size")
        for tag in ("ImageOrientationPatient", "PixelSpacing"):
            if _floats(s.ds.get(tag)) != _floats(first.ds.get(tag)):
                raise DataError(display_path(s.path), f"{tag} {_floats(s.ds.get(tag))} differs from "
                                                      f"{first.path.name}'s {_floats(first.ds.get(tag))}")


def _pixels(s: _Slice) -> np.ndarray:
    if int(s.ds.get("SamplesPerPixel", 1)) != 1:
        raise DataError(display_path(s.path), f"{s.ds.SamplesPerPixel} samples per pixel; a CT slice has one")
    try:
        stored = s.ds.pixel_array
    except Exception as exc:  # pydicom raises many kinds (no pixel data, no decoder for the transfer syntax, ...)
        raise DataError(display_path(s.path), f"pixel data not readable: {exc}") from None
    if stored.shape != (int(s.ds.Rows), int(s.ds.Columns)):
        raise DataError(display_path(s.path), f"pixel data of shape {stored.shape}, expected one frame of "
                                              f"{_size(s.ds)}")
    slope, intercept = float(s.ds.get("RescaleSlope", 1.0)), float(s.ds.get("RescaleIntercept", 0.0))
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _lps_affine(slices: list[_Slice], folder: Path) -> np.ndarray:
    first = slices[0].ds
    orientation = np.array(_floats(first.get("ImageOrientationPatient")) or AXIAL)
    along_row, along_column = orientation[:3], orientation[3:]
    spacing = _floats(first.get("PixelSpacing"))
    if len(spacing) != 2 or min(spacing) <= 0:
        raise DataError(display_path(slices[0].path), f"PixelSpacing {spacing or 'not given'}; the in-plane "
                                                      "voxel size is needed")
    row_step, column_step = spacing  # DICOM: spacing between rows, then between columns
    affine = np.eye(4)
    affine[:3, 0] = along_row * column_step
    affine[:3, 1] = along_column * row_step
    affine[:3, 2] = _slice_step(slices, np.cross(along_row, along_column), folder)
    affine[:3, 3] = _floats(first.get("ImagePositionPatient")) or (0.0, 0.0, 0.0)
    return affine


def _slice_step(slices: list[_Slice], normal: np.ndarray, folder: Path) -> np.ndarray:
    positions = [_floats(s.ds.get("ImagePositionPatient")) for s in slices]
    if len(slices) > 1 and all(len(p) == 3 for p in positions):
        pos = np.array(positions)
        mean = (pos[-1] - pos[0]) / (len(slices) - 1)
        if np.linalg.norm(mean) > 0:
            off = np.linalg.norm(np.diff(pos, axis=0) - mean, axis=1)
            k = int(off.argmax())
            if off[k] > _EVEN * np.linalg.norm(mean):
                raise DataError(display_path(slices[k + 1].path),
                                f"lies {np.linalg.norm(pos[k + 1] - pos[k]):.4g} mm from {slices[k].path.name}, "
                                f"where the series steps {np.linalg.norm(mean):.4g} mm on average: the slices are "
                                "not evenly spaced")
            return mean
    for tag in ("SpacingBetweenSlices", "SliceThickness"):
        value = slices[0].ds.get(tag)
        if value not in (None, "") and float(value) > 0:
            return normal * float(value)
    raise DataError(display_path(folder), "the slice positions are absent or all equal, and no "
                                          "SpacingBetweenSlices or SliceThickness gives the slice spacing")


def _floats(value) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if value not in (None, "") else ()


def _size(ds: pydicom.Dataset) -> str:
    return f"{ds.get('Columns')}x{ds.get('Rows')}"
