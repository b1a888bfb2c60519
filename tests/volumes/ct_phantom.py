"""A CT phantom of known geometry, written as NIfTI and as DICOM series (the test data of tests/volumes).

``make_phantom`` builds HU values and labels on an axis-aligned RAS grid:
air around a soft-tissue body, a sphere of "liver" and, off-centre towards
the patient's right, anterior and superior, a smaller sphere of "tumour"
inside it (so a flip or swap of any axis shows), and a few slices at each
end without either. ``write_nifti`` stores it in any axis orientation;
``write_series`` stores it as an axial DICOM series the way scanners do
(LPS, one file per slice, stored values rescaled by slope and intercept).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

AIR, TISSUE, LIVER, TUMOUR = -1000, 30, 90, 160  # HU
BACKGROUND_LABEL, LIVER_LABEL, TUMOUR_LABEL = 0, 1, 2


@dataclass(frozen=True)
class Phantom:
    hu: np.ndarray  # (x, y, z) int16 HU on the RAS grid of ``affine``
    label: np.ndarray  # (x, y, z) uint8: 0 background, 1 liver, 2 tumour
    affine: np.ndarray  # 4 x 4, diagonal: voxel -> RAS mm

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.diag(self.affine)[:3])

    def mask(self, value: int) -> np.ndarray:
        return self.label == value


def make_phantom(shape: tuple[int, int, int] = (40, 32, 14), spacing: tuple[float, float, float] = (0.8, 0.9, 2.5),
                 origin: tuple[float, float, float] = (-15.0, -12.0, 40.0)) -> Phantom:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    index = np.indices(shape).astype(float)
    mm = [index[a] * spacing[a] for a in range(3)]  # distance from voxel 0, per axis
    centre = [(n - 1) * s / 2 for n, s in zip(shape, spacing, strict=True)]
    extent = [n * s for n, s in zip(shape, spacing, strict=True)]

    def inside(c: Sequence[float], radius: float) -> np.ndarray:
        return sum((mm[a] - c[a]) ** 2 for a in range(3)) <= radius**2

    body = (mm[0] - centre[0]) ** 2 / (0.45 * extent[0]) ** 2 + (mm[1] - centre[1]) ** 2 / (0.45 * extent[1]) ** 2 <= 1
    liver = inside(centre, 0.32 * extent[2])
    tumour_centre = [centre[0] + 0.1 * extent[0], centre[1] + 0.1 * extent[1], centre[2] + 0.12 * extent[2]]
    tumour = inside(tumour_centre, 0.12 * extent[2])
    hu = np.where(body, TISSUE, AIR).astype(np.int16)
    hu[liver] = LIVER
    hu[tumour] = TUMOUR
    label = np.zeros(shape, np.uint8)
    label[liver] = LIVER_LABEL
    label[tumour] = TUMOUR_LABEL
    return Phantom(hu, label, affine)


# --------------------------------------------------------------------------- NIfTI
def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, axes: str = "RAS") -> Path:
    """``data`` on the RAS grid of ``affine``, stored with its array axes towards ``axes`` (e.g. ``LPS``, ``ASR``)."""
    image = nib.Nifti1Image(data, affine)
    if axes != "RAS":
        image = image.as_reoriented(nib.orientations.axcodes2ornt(tuple(axes)))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


# --------------------------------------------------------------------------- DICOM
@dataclass(frozen=True)
class SeriesOptions:
    """How ``write_series`` stores the slices, and the faults tests ask for."""

    modality: str = "CT"
    slope: float = 1.0
    intercept: float = -1024.0
    names: Sequence[str] | None = None  # file name of each slice, in slice order; default image_<number>
    first_number: int = 1
    instance_numbers: bool = True  # False: no InstanceNumber, order from the file names only
    positions: str = "real"  # real | zero (every ImagePositionPatient 0,0,0) | none
    drop: Sequence[int] = ()  # slices left out (a gap in the numbers)
    resize: dict[int, tuple[int, int]] | None = None  # slice -> (rows, columns) of a wrong size


def write_series(folder: Path, values: np.ndarray, affine: np.ndarray, options: SeriesOptions = SeriesOptions(),
                 mask: bool = False) -> Path:
    """An axial series of the (x, y, z) RAS ``values``: pixel (r, c) of slice k is voxel (X-1-c, Y-1-r, k).

    ``mask``: values stored as uint8 0/255 without rescaling, as 3D-IRCADb's mask series are.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    shape = values.shape
    spacing = np.diag(affine)[:3]
    for k in range(shape[2]):
        if k in options.drop:
            continue
        plane = np.swapaxes(values[::-1, ::-1, k], 0, 1)  # rows posterior-wards, columns to the patient's left
        if options.resize and k in options.resize:
            plane = np.resize(plane, options.resize[k])
        ras = affine @ np.array([shape[0] - 1, shape[1] - 1, k, 1.0])
        position = {"real": [-ras[0], -ras[1], ras[2]], "zero": [0.0, 0.0, 0.0], "none": None}[options.positions]
        number = options.first_number + k
        ds = _slice(plane, spacing, position, options, mask, series, study)
        if options.instance_numbers:
            ds.InstanceNumber = number
        name = options.names[k] if options.names is not None else f"image_{number}"
        ds.save_as(folder / name, enforce_file_format=True)
    return folder


def _slice(plane: np.ndarray, spacing: np.ndarray, position: list[float] | None, options: SeriesOptions, mask: bool,
           series: str, study: str) -> Dataset:
    sop_class = CTImageStorage if options.modality == "CT" else MRImageStorage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.Modality = options.modality
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName = "phantom"
    ds.Rows, ds.Columns = plane.shape
    ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # between rows (y), between columns (x)
    ds.SliceThickness = ds.SpacingBetweenSlices = float(spacing[2])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if position is not None:
        ds.ImagePositionPatient = [float(p) for p in position]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if mask:
        stored = np.where(plane > 0, 255, 0).astype(np.uint8)
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
    else:
        stored = np.rint((plane.astype(float) - options.intercept) / options.slope).astype(np.uint16)
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = options.slope, options.intercept
    ds.PixelData = stored.tobytes()
    return ds


def write_ircadb(patient: Path, phantom: Phantom, options: SeriesOptions = SeriesOptions(),
                 mask_options: dict[str, SeriesOptions] | None = None) -> Path:
    """A 3D-IRCADb patient folder: PATIENT_DICOM plus MASKS_DICOM/{liver, livertumor1, artery}.

    The liver mask covers the tumour too (as IRCAD's do), so only ``priority`` makes the tumour win;
    ``artery`` matches no structure of the profiles and must be left unread.
    """
    masks = mask_options or {}
    write_series(patient / "PATIENT_DICOM", phantom.hu, phantom.affine, options)
    liver = phantom.label > 0
    structures = {"liver": liver, "livertumor1": phantom.mask(TUMOUR_LABEL), "artery": np.zeros_like(liver)}
    for name, values in structures.items():
        write_series(patient / "MASKS_DICOM" / name, values.astype(np.uint8), phantom.affine,
                     masks.get(name, SeriesOptions()), mask=True)
    return patient
