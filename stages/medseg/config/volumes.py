"""Schema of the volume formats of ``datasets.<name>.convert``: CT volumes sliced into the 2D converted format.

Two annotation formats, each with its layout (as AUL's polygons carry
theirs): ``nifti_volumes``, image and label volumes in NIfTI paired by a
volume id in their paths (the Decathlon and LiTS layouts), and
``dicom_series``, one image series and one mask series per structure in
each patient folder (the 3D-IRCADb layout). ``VolumeSlicing``
(``convert.volume``) says how a volume becomes 2D images: the modality it
must be, the HU window, the in-plane spacing, which slices are kept, and how
many neighbouring slices form one image (2.5D).
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Strict

ID = "{id}"


def _check_pattern(v: str) -> str:
    """A path under the dataset root holding ``{id}`` once in its file name; ``*`` matches within one folder name."""
    path = PurePosixPath(v)
    if path.is_absolute() or ".." in path.parts or "\\" in v:
        raise ValueError(f"{v!r} must be a path under the dataset root, without '..'")
    if v.count(ID) != 1 or ID not in path.name:
        raise ValueError(f"{v!r} must hold '{ID}' (the volume id) once, in the file name")
    if re.search(r"[?\[\]{}]", v.replace(ID, "")):
        raise ValueError(f"{v!r}: only '*' and '{ID}' are patterns here")
    return v


class NiftiAnnotation(Strict):
    """NIfTI images and label volumes (``.nii`` or ``.nii.gz``) on one grid, paired by the volume id.

    ``images`` and ``labels`` are paths under the dataset root with ``{id}``
    in the file name (``*`` matches any folder or part of a name), e.g. the
    Decathlon's ``imagesTr/{id}.nii.gz`` and ``labelsTr/{id}.nii.gz``, or
    LiTS's ``*/volume-{id}.nii`` and ``*/segmentation-{id}.nii``. ``values``
    maps each class to its value in the label volumes; 0 is background
    unless listed.
    """

    format: Literal["nifti_volumes"]
    images: str = "imagesTr/{id}.nii.gz"
    labels: str = "labelsTr/{id}.nii.gz"
    values: dict[str, int] = Field(min_length=1, description="class -> its voxel value in the label volumes")

    def pixel_classes(self) -> set[str]:
        return set(self.values)

    @field_validator("images", "labels")
    @classmethod
    def _pattern(cls, v: str) -> str:
        return _check_pattern(v)

    @field_validator("values")
    @classmethod
    def _values(cls, v: dict[str, int]) -> dict[str, int]:
        if any(not 0 <= value <= 65535 for value in v.values()):
            raise ValueError("label values must be 0..65535")
        if len(set(v.values())) != len(v):
            raise ValueError("two classes share one label value")
        zero = [name for name, value in v.items() if value == 0 and name != "background"]
        if v.get("background", 0) != 0 or zero:
            raise ValueError("0 is background (list it as 0 or leave it out); the other classes need other values")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> NiftiAnnotation:
        if self.images == self.labels:
            raise ValueError("images and labels name the same files")
        return self


class DicomAnnotation(Strict):
    """3D-IRCADb: in each patient folder, one image series and a folder of mask series, one per structure.

    ``patients`` is a folder pattern under the dataset root (``*`` allowed;
    ``.``: the root is one patient); the volume id is the patient folder's
    name. ``structures`` maps folder-name patterns (``livertumor*``) of the
    mask series to classes; a voxel of any mask (value > 0) is that class.
    Where masks overlap, the class earlier in ``priority`` wins. Mask
    folders matching no pattern are not read (the report lists them).
    """

    format: Literal["dicom_series"]
    patients: str = "."
    image_series: str = "PATIENT_DICOM"
    mask_series: str = "MASKS_DICOM"
    structures: dict[str, str] = Field(min_length=1, description="mask folder pattern -> class")
    priority: list[str] = Field(min_length=1, description="classes, the first wins where masks overlap")

    def pixel_classes(self) -> set[str]:
        return set(self.structures.values())

    @field_validator("patients", "image_series", "mask_series")
    @classmethod
    def _inside_root(cls, v: str) -> str:
        path = PurePosixPath(v)
        if not v or path.is_absolute() or ".." in path.parts or "\\" in v:
            raise ValueError(f"{v!r} must be a folder path under the dataset root, without '..'")
        return v

    @model_validator(mode="after")
    def _priority_covers_classes(self) -> DicomAnnotation:
        classes = self.pixel_classes()
        if "background" in classes:
            raise ValueError("structures: a mask marks a foreground class, not 'background'")
        if len(set(self.priority)) != len(self.priority) or set(self.priority) != classes:
            raise ValueError(f"priority must list each class of structures once, got {self.priority} for "
                             f"{sorted(classes)}")
        return self


VolumeAnnotation = NiftiAnnotation | DicomAnnotation


class VolumeSlicing(Strict):
    """How the axial slices of a volume become the converted 2D images.

    Volumes are reoriented to RAS. ``window``: HU range mapped onto 0..255
    (clipped outside). ``spacing``: in-plane (x, y) mm to resample each slice
    to (``null``: keep the scan's). Every slice with foreground is kept, and
    of the others the share ``empty_fraction``, drawn with ``seed`` and the
    volume id. ``slices_per_image``: 1, or 3 for 2.5D input (the slice and
    its neighbours below and above as the image's channels; the profile's
    ``channels`` must agree). ``modality``: what a DICOM series must be
    (NIfTI has no modality tag: the profile vouches for it).
    ``affine_tolerance``: how far (mm) a label or mask series' geometry may
    differ from its image's. ``slab_groups``: ``null`` (the default):
    every slice's group is its volume, so a split keeps a patient whole; ``n``
    puts each run of ``n`` contiguous slices (z indices ``0..n-1``, ``n..2n-1``,
    ...) in a group of its own, so one patient's volume can be split for a
    measurement. Neighbouring slabs are correlated, so a score on such a split
    is NOT a patient-level result; ``report.json`` says so.
    """

    modality: Literal["CT"] = "CT"
    window: tuple[float, float] = Field((-200.0, 200.0), description="HU range onto 0..255")
    spacing: tuple[float, float] | None = Field(None, description="in-plane (x, y) mm, or null to keep")
    empty_fraction: float = Field(0.1, ge=0.0, le=1.0, description="share of the slices without foreground kept")
    seed: int = 2026
    slices_per_image: Literal[1, 3] = 1
    affine_tolerance: float = Field(1e-3, gt=0.0, description="mm")
    slab_groups: int | None = Field(None, ge=1, description="slices per group (contiguous slabs), or null: one "
                                                            "group per volume")

    @field_validator("window")
    @classmethod
    def _window(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"window must be [low, high] with low < high, got {list(v)}")
        return v

    @field_validator("spacing")
    @classmethod
    def _spacing(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and min(v) <= 0:
            raise ValueError(f"spacing must be positive mm, got {list(v)}")
        return v
