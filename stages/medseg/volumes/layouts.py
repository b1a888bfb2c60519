"""The volumes of a raw dataset and their labels, as the volume formats lay them out.

``find_cases`` lists each volume's image and label files: for
``nifti_volumes`` the image and label paths matching the profile's
patterns, paired by the ``{id}`` part; for ``dicom_series`` each patient
folder's image series and the mask series whose folder names match
``structures``. ``read_case`` reads one case: the image ``Volume`` and a
uint8 label volume of class indices on the same RAS grid, after checking
that the labels lie on the image's grid.
"""
from __future__ import annotations

import fnmatch
import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.config import ConvertConfig, DicomAnnotation, NiftiAnnotation
from medseg.formats.samples import safe_id
from medseg.io.errors import DataError
from medseg.io.images import display_path

from .dicom import read_series
from .nifti import read_nifti
from .volume import Volume, grid_problem


@dataclass(frozen=True)
class VolumeCase:
    id: str  # the volume id: also the patient group of all its slices
    image: Path  # a NIfTI file, or a DICOM series folder
    labels: tuple[Path, ...]  # one NIfTI label volume, or the mask series folders
    label_classes: tuple[str, ...] = ()  # dicom_series: the class of each mask series


@dataclass
class Cases:
    cases: list[VolumeCase]
    problems: list[DataError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find_cases(root: Path, ann: NiftiAnnotation | DicomAnnotation) -> Cases:
    found = _nifti_cases(root, ann) if isinstance(ann, NiftiAnnotation) else _dicom_cases(root, ann)
    if not found.cases and not found.problems:
        raise DataError(display_path(root), f"no volumes found for format {ann.format!r} (see the profile's "
                                            "annotation in params.yaml)")
    return found


# --------------------------------------------------------------------------- NIfTI pairs
def _regex(pattern: str) -> re.Pattern:
    """``{id}`` and ``*`` of a path pattern as a regex on a relative POSIX path."""
    body = re.escape(pattern).replace(re.escape("{id}"), "(?P<id>[^/]+)").replace(re.escape("*"), "[^/]*")
    return re.compile(body)


def _matches(root: Path, pattern: str, volume_id: str = "*") -> list[Path]:
    wanted = pattern.replace("{id}", volume_id)
    return sorted(p for p in root.glob(wanted) if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root).parts))


def _nifti_cases(root: Path, ann: NiftiAnnotation) -> Cases:
    images, regex = {}, _regex(ann.images)
    found = Cases([])
    for path in _matches(root, ann.images):
        vid = regex.fullmatch(path.relative_to(root).as_posix()).group("id")
        if vid in images:
            raise DataError(display_path(path), f"volume id {vid!r} also names {display_path(images[vid])}")
        images[vid] = path
    labelled = set()
    for vid, image in sorted(images.items()):
        labels = _matches(root, ann.labels, glob.escape(vid))
        labelled.update(labels)
        if len(labels) != 1:
            problem = (f"no label volume {ann.labels.replace('{id}', vid)!r}" if not labels else
                       "several label volumes: " + ", ".join(display_path(p.relative_to(root)) for p in labels))
            found.problems.append(DataError(display_path(image), problem))
            continue
        found.cases.append(VolumeCase(safe_id(vid), image, (labels[0],)))
    unpaired = [p for p in _matches(root, ann.labels) if p not in labelled and p not in images.values()]
    if unpaired:
        found.notes.append(f"{len(unpaired)} label volume(s) without an image, e.g. "
                           f"{[display_path(p.relative_to(root)) for p in unpaired[:3]]}")
    _check_unique(found.cases)
    return found


# --------------------------------------------------------------------------- 3D-IRCADb patient folders
def _dicom_cases(root: Path, ann: DicomAnnotation) -> Cases:
    if ann.patients == ".":
        patients = [root]
    else:
        patients = sorted(p for p in root.glob(ann.patients) if p.is_dir() and not p.name.startswith("."))
        if not patients:
            raise DataError(display_path(root), f"no patient folder matches {ann.patients!r}")
    found = Cases([])
    for patient in patients:
        try:
            found.cases.append(_patient_case(patient, ann, found.notes))
        except DataError as exc:
            found.problems.append(exc)
    _check_unique(found.cases)
    return found


def _patient_case(patient: Path, ann: DicomAnnotation, notes: list[str]) -> VolumeCase:
    image, masks = patient / ann.image_series, patient / ann.mask_series
    for folder in (image, masks):
        if not folder.is_dir():
            raise DataError(display_path(folder), "folder not found (see the profile's annotation in params.yaml)")
    series, classes, unread = [], [], []
    for folder in sorted(p for p in masks.iterdir() if p.is_dir() and not p.name.startswith(".")):
        matched = sorted({cls for pattern, cls in ann.structures.items() if fnmatch.fnmatchcase(folder.name, pattern)})
        if len(matched) > 1:
            raise DataError(display_path(folder), f"matches structures of classes {matched}; make the patterns "
                                                  "exclusive")
        if matched:
            series.append(folder)
            classes.append(matched[0])
        else:
            unread.append(folder.name)
    if not series:
        raise DataError(display_path(masks), f"no mask series folder matches structures {list(ann.structures)}")
    if unread:
        notes.append(f"{display_path(masks)}: mask series matching no structure, not read: {unread}")
    absent = sorted(set(ann.structures.values()) - set(classes))
    if absent:
        notes.append(f"{display_path(masks)}: no mask series of class(es) {absent}")
    return VolumeCase(safe_id(patient.name), image, tuple(series), tuple(classes))


def _check_unique(cases: list[VolumeCase]) -> None:
    seen: dict[str, Path] = {}
    for case in cases:
        if case.id in seen:
            raise DataError(display_path(case.image), f"volume id {case.id!r} clashes with "
                                                      f"{display_path(seen[case.id])}; rename one of them")
        seen[case.id] = case.image


# --------------------------------------------------------------------------- reading a case
def read_case(case: VolumeCase, cfg: ConvertConfig) -> tuple[Volume, np.ndarray]:
    """The image ``Volume`` and its (x, y, z) uint8 class-index volume on the same RAS grid."""
    ann, tolerance = cfg.annotation, cfg.volume.affine_tolerance
    if isinstance(ann, NiftiAnnotation):
        image = read_nifti(case.image)
        labels = read_nifti(case.labels[0])
        _check_grid(labels, image, tolerance)
        return image, _label_classes(labels, ann, cfg.classes)
    image = read_series(case.image, cfg.volume.modality)
    label = np.zeros(image.shape, np.uint8)
    masks = [(read_series(folder), cls) for folder, cls in zip(case.labels, case.label_classes, strict=True)]
    for mask, _ in masks:
        _check_grid(mask, image, tolerance)
    for cls in reversed(ann.priority):  # the first class of priority is painted last, so it wins
        for mask, mask_class in masks:
            if mask_class == cls:
                label[mask.data > 0] = cfg.classes.index(cls)
    return image, label


def _check_grid(labels: Volume, image: Volume, tolerance: float) -> None:
    if labels.source_shape[2] != image.source_shape[2] and labels.source_shape[:2] == image.source_shape[:2]:
        raise DataError(display_path(labels.path), f"has {labels.source_shape[2]} slices but the image "
                                                   f"{display_path(image.path)} has {image.source_shape[2]}")
    problem = grid_problem(labels, image, tolerance)
    if problem:
        raise DataError(display_path(labels.path), problem)


def _label_classes(labels: Volume, ann: NiftiAnnotation, classes: list[str]) -> np.ndarray:
    """Label values -> class indices; a value the profile does not list is an error naming it and its voxels."""
    data = labels.data
    if not np.issubdtype(data.dtype, np.integer):
        if not np.array_equal(data, np.rint(data)):
            raise DataError(display_path(labels.path), "label volume holds non-integer values")
        data = data.astype(np.int32)
    low, high = int(data.min()), int(data.max())
    if low < 0 or high > 65535:
        raise DataError(display_path(labels.path), f"label values {low}..{high} outside 0..65535")
    counts = np.bincount(data.ravel(), minlength=high + 1)
    lut = np.full(high + 1, 255, np.uint8)
    lut[0] = 0
    for name, value in ann.values.items():
        if value <= high:
            lut[value] = classes.index(name)
    unknown = [(v, int(counts[v])) for v in np.flatnonzero(counts) if lut[v] == 255]
    if unknown:
        shown = ", ".join(f"{v} ({n} voxels)" for v, n in unknown[:5])
        raise DataError(display_path(labels.path), f"label value(s) not in annotation.values {dict(ann.values)}: "
                                                   f"{shown}")
    return lut[data]
