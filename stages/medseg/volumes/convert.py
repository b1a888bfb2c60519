"""The convert stage's work for the volume formats: CT volumes -> axial 2D images, label maps, geometry.

``convert_volumes(raw, out, cfg)`` finds the volumes
(``layouts``), reads each with its labels onto the RAS grid, keeps the
slices ``slicing.select_slices`` picks, and writes each as an 8-bit image
(HU window, in-plane resampling, 1 or 3 slices as channels) and a label map
through ``medseg.data.converted``: the same converted format the later
stages read. Every slice of a volume has the volume's id as its group, so a
split by group keeps a patient on one side; with ``volume.slab_groups: n``
the group is instead the slab of ``n`` contiguous slices the slice lies in
(``slab_group``), a measurement on one patient that ``report.json`` labels
as not patient-level. The manifest gains the volume
columns (``converted.VOLUME_COLUMNS``), ``volumes.json`` the geometry of
each volume (``medseg.data.volumes``), and ``report.json`` the slice
counts. A volume is read and checked whole before any of its slices is
written, so ``on_error: skip`` leaves no trace of a bad one.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medseg.config import ConvertConfig, VolumeSlicing
from medseg.data import converted
from medseg.data.volumes import VolumeGeometry, voxel_to_image, write_volumes
from medseg.formats.convert import convert_all, handle_problems
from medseg.io.errors import DataError
from medseg.io.images import display_path

from .layouts import VolumeCase, find_cases, read_case
from .slicing import InPlaneGrid, select_slices, slice_rng, stack_indices, window


@dataclass(frozen=True)
class ConvertedVolume:
    rows: list[dict]
    geometry: VolumeGeometry
    empty_kept: int


def _image_class(counts: np.ndarray, cfg: ConvertConfig) -> str:
    if cfg.image_class.source == "fixed":
        return cfg.image_class.value
    fg = counts[1:]
    return cfg.classes[1 + int(fg.argmax())] if fg.any() else cfg.image_class.empty


def slice_image(hu: np.ndarray, k: int, grid: InPlaneGrid, slicing: VolumeSlicing) -> np.ndarray:
    """The 8-bit image of slice ``k`` of the RAS volume ``hu``: resampled, windowed, 1 or 3 slices as channels.

    Convert writes these images and predict feeds them to the model, so both see the same pixels.
    """
    planes = [window(grid.image(hu[:, :, j]), *slicing.window)
              for j in stack_indices(k, hu.shape[2], slicing.slices_per_image)]
    return voxel_to_image(planes[0] if len(planes) == 1 else np.stack(planes, axis=-1))


def slab_group(volume_id: str, k: int, slab: int | None) -> str:
    """The group of slice ``k``: the volume, or with ``slab`` slices per group, ``<volume>_slab<k // slab>``."""
    return volume_id if slab is None else f"{volume_id}_slab{k // slab:03d}"


def convert_volume(case: VolumeCase, cfg: ConvertConfig, out: Path, raw: Path) -> ConvertedVolume:
    """Read, check and slice one volume; raise ``DataError`` before writing anything if it is bad."""
    image, label = read_case(case, cfg)
    grid = InPlaneGrid.for_spacing(image.shape[:2], image.spacing[:2], cfg.volume.spacing)
    affine = grid.affine(image.affine)
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    kept, empty_kept = select_slices(label, cfg.volume.empty_fraction, slice_rng(cfg.volume.seed, case.id))
    source_image = display_path(case.image.relative_to(raw))
    source_labels = tuple(display_path(p.relative_to(raw)) for p in case.labels)
    digits = max(4, len(str(image.shape[2] - 1)))
    rows = []
    for k in kept:
        sid = f"{case.id}_z{k:0{digits}d}"
        picture = slice_image(image.data, k, grid, cfg.volume)
        labels = voxel_to_image(grid.label(label[:, :, k]))
        converted.write_sample(out, sid, picture, labels)
        counts = np.bincount(labels.ravel(), minlength=len(cfg.classes))
        rows.append({**converted.manifest_row(
            sid, slab_group(case.id, k, cfg.volume.slab_groups), _image_class(counts, cfg), labels.shape,
            source_image=source_image, source_mask=";".join(source_labels), pixels=counts, classes=cfg.classes),
            **converted.volume_columns(case.id, k, spacing)})
    geometry = VolumeGeometry(
        id=case.id, shape=(*grid.size, image.shape[2]), affine=_rows(affine), spacing=spacing,
        source_shape=image.source_shape, source_affine=_rows(image.source_affine), slices=tuple(kept),
        source_image=source_image, source_labels=source_labels)
    return ConvertedVolume(rows, geometry, empty_kept)


def _rows(affine: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(round(float(v), 9) for v in row) for row in affine)


# --------------------------------------------------------------------------- dataset
def convert_volumes(raw: Path, out: Path, cfg: ConvertConfig, workers: int | None = None) -> dict:
    """Convert every volume under ``raw`` into ``out`` (an empty folder the caller moves into place); return the
    report. Volumes are converted in a process pool; the output does not depend on the number of workers."""
    found = find_cases(raw, cfg.annotation)
    converted.create(out)
    jobs = [(c, cfg, out, raw) for c in found.cases]
    done, failed = convert_all(convert_volume, jobs, workers)
    problems = found.problems + failed
    handle_problems(problems, cfg.on_error)
    rows = [row for volume in done for row in volume.rows]
    if not rows:
        raise DataError(display_path(raw), "no slices to write (no readable volume, or none with a slice kept)")
    manifest = converted.write_manifest(out, rows)
    write_volumes(out, [v.geometry for v in done])
    report = _report(done, problems, found.notes, cfg, manifest)
    converted.write_report(out, report)
    return report


SLAB_CAVEAT = ("NOT a patient-level result: the groups are slabs of {n} contiguous slices, so one patient's slices "
               "lie on several sides of the split and neighbouring slabs are correlated")


def _groups_by(slab: int | None) -> dict:
    if slab is None:
        return {"unit": "volume", "patient_level": True}
    return {"unit": f"slab of {slab} slices", "patient_level": False, "caveat": SLAB_CAVEAT.format(n=slab)}


def _report(done: list[ConvertedVolume], problems: list[DataError], notes: list[str], cfg: ConvertConfig,
            manifest: pd.DataFrame) -> dict:
    total = sum(v.geometry.shape[2] for v in done)
    empty_kept = sum(v.empty_kept for v in done)
    return {
        "format": cfg.annotation.format,
        "classes": cfg.classes,
        "channels": cfg.channels,
        "count": len(manifest),
        "groups": int(manifest["group"].nunique()),
        "image_classes": dict(sorted(Counter(manifest["image_class"]).items())),
        "class_pixels": {name: int(manifest[f"px_{name}"].sum()) for name in cfg.classes},
        "snapped_pixels": 0,  # label volumes hold class values exactly; nothing is snapped
        "volumes": len(done),
        "slices": {"in_volumes": total, "with_foreground": len(manifest) - empty_kept, "empty_kept": empty_kept,
                   "empty_left_out": total - len(manifest)},
        "volume": cfg.volume.model_dump(mode="json"),
        "groups_by": _groups_by(cfg.volume.slab_groups),
        "skipped": [{"file": str(p.path), "problem": p.problem} for p in problems],
        "notes": notes,
    }

