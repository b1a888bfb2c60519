"""Apply a checkpoint trained on CT slices to a whole volume: a NIfTI file or a DICOM series folder.

``predict_volume(model, source, output, device, overlays)`` reads the volume
as convert does (``medseg.volumes``: onto the RAS grid, in HU), cuts every
axial slice into the image convert would have written, with the convert
settings the checkpoint keeps from its dataset (``info["volume"]``: HU
window, in-plane spacing, 1 or 3 slices as channels;
``medseg.volumes.convert.slice_image``), predicts each slice at its own size
(``medseg.model.ensemble.ensemble_labels``) and stacks the label maps. The
labels go back onto the input's own grid: the in-plane resampling undone by
nearest neighbour (``InPlaneGrid.label_back``), then the RAS reorientation
(``medseg.volumes.volume.from_ras``), so the output has the input's shape
and affine. Into ``output`` (which appears only once complete):

- ``<name>.nii.gz``: uint8 class indices in the order of the checkpoint's
  classes, with the input's affine. For a DICOM series the grid is the
  series' own (column, row, slice in instance order), its affine the one
  built from the headers (``medseg.volumes.dicom``);
- ``overlays/<name>_z<k>.png``: the ``overlays`` slices with most foreground
  (``k``: the index along the RAS z axis, inferior to superior), drawn as
  radiologists view them;
- ``findings.csv``: one row, voxels and millilitres per class, and the
  image-level class the prediction implies.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pandas as pd
from pydantic import ValidationError

from medseg.config import VolumeSlicing
from medseg.data.volumes import image_to_voxel, voxel_to_image
from medseg.export.engine import TORCH, load_ensemble_on
from medseg.figures.overlay import overlay
from medseg.formats.samples import safe_id
from medseg.io.atomic import atomic_dir
from medseg.io.errors import DataError
from medseg.io.images import display_path, write_png
from medseg.model.ensemble import Ensemble, ensemble_labels
from medseg.model.runtime import pick_device
from medseg.volumes.convert import slice_image
from medseg.volumes.dicom import read_series
from medseg.volumes.nifti import NIFTI_SUFFIXES, nifti_shape, read_nifti
from medseg.volumes.slicing import InPlaneGrid
from medseg.volumes.volume import Volume, from_ras

from .predict import FINDINGS
from .scoring import predicted_image_class

if TYPE_CHECKING:
    import torch

OVERLAYS = 3  # slices drawn, unless the command says otherwise


def volume_settings(ckpt: Ensemble, model_path: Path) -> VolumeSlicing:
    """The convert ``volume`` settings the model was trained with; ``DataError`` naming the checkpoint if absent."""
    stored = ckpt.info.get("volume")
    if stored is None:
        raise DataError(model_path, "keeps no CT volume settings (HU window, spacing, slices per image): it was not "
                                    "trained on a dataset sliced from volumes; predict on 2D images with it")
    try:
        slicing = VolumeSlicing.model_validate(stored)
    except ValidationError as exc:
        raise DataError(model_path, f"the checkpoint's volume settings are not valid: {exc}") from None
    if slicing.slices_per_image != ckpt.channels:
        raise DataError(model_path, f"takes {ckpt.channels} channel(s) but its volume settings make "
                                    f"{slicing.slices_per_image} slice(s) per image")
    return slicing


def read_input(source: Path, slicing: VolumeSlicing, channels: int) -> Volume:
    """The volume at ``source`` (a DICOM series folder or a NIfTI file) on the RAS grid, in HU."""
    if source.is_dir():
        return read_series(source, slicing.modality)
    shape = nifti_shape(source)
    if len(shape) > 3 and any(n != 1 for n in shape[3:]):
        raise DataError(display_path(source), f"holds {shape[3]} value(s) per voxel (shape {shape}), but the model "
                                              f"takes one CT volume and makes its {channels} input channel(s) "
                                              f"from {slicing.slices_per_image} neighbouring slice(s); give it "
                                              "the single-channel scan")
    return read_nifti(source)


def volume_name(source: Path) -> str:
    name = source.name
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return safe_id(name[:-len(suffix)])
    return safe_id(name)


def predict_slices(ckpt: Ensemble, volume: Volume, grid: InPlaneGrid, slicing: VolumeSlicing,
                   device: torch.device) -> np.ndarray:
    """(x, y, z) uint8 labels on the resampled RAS grid, one prediction per axial slice."""
    labels = np.zeros((*grid.size, volume.shape[2]), np.uint8)
    for k in range(volume.shape[2]):
        image = slice_image(volume.data, k, grid, slicing)
        label = ensemble_labels(ckpt, image, device)
        labels[:, :, k] = image_to_voxel(label)
    return labels


def to_source_grid(labels: np.ndarray, grid: InPlaneGrid, source_affine: np.ndarray) -> np.ndarray:
    """Labels on the (resampled) RAS grid back on the input's own grid: nearest neighbour in-plane, then the
    file's axis order and directions."""
    planes = np.stack([grid.label_back(labels[:, :, k]) for k in range(labels.shape[2])], axis=-1)
    return np.ascontiguousarray(from_ras(planes, source_affine))


def overlay_slices(labels: np.ndarray, n: int) -> list[int]:
    """The ``n`` slices with most foreground, in z order (the middle slice where nothing is predicted)."""
    if n <= 0:
        return []
    counts = (labels > 0).reshape(-1, labels.shape[2]).sum(axis=0)
    ranked = [int(k) for k in np.argsort(-counts, kind="stable") if counts[k] > 0][:n]
    return sorted(ranked) if ranked else [labels.shape[2] // 2]


def findings(name: str, source: Path, labels: np.ndarray, volume: Volume, classes: list[str],
             vocabulary: list[str]) -> dict:
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    voxels = {c: int(np.count_nonzero(labels == i)) for i, c in enumerate(classes) if i > 0}
    return {"file": display_path(source.name), "output": f"{name}.nii.gz",
            "shape": "x".join(str(n) for n in volume.source_shape), "voxel_ml": round(voxel_ml, 9),
            **{f"vx_{c}": n for c, n in voxels.items()},
            **{f"ml_{c}": round(n * voxel_ml, 3) for c, n in voxels.items()},
            "predicted_class": predicted_image_class(voxels, vocabulary)}


def predict_volume(model_path: Path, source: Path, output: Path, device_name: str,
                   overlays: int = OVERLAYS, engine: str = TORCH) -> pd.DataFrame:
    """Segment the volume at ``source`` into ``output``; return the findings table (one row)."""
    device = pick_device(device_name)
    ckpt = load_ensemble_on(model_path, device, engine)
    slicing = volume_settings(ckpt, model_path)
    volume = read_input(Path(source), slicing, ckpt.channels)
    grid = InPlaneGrid.for_spacing(volume.shape[:2], volume.spacing[:2], slicing.spacing)
    labels = predict_slices(ckpt, volume, grid, slicing, device)
    on_source = to_source_grid(labels, grid, volume.source_affine)
    name = volume_name(Path(source))
    with atomic_dir(output) as out:
        nib.save(nib.Nifti1Image(on_source, volume.source_affine), out / f"{name}.nii.gz")
        (out / "overlays").mkdir()
        for k in overlay_slices(labels, overlays):
            image = slice_image(volume.data, k, grid, slicing)
            centre = image[..., image.shape[2] // 2] if image.ndim == 3 else image
            write_png(out / "overlays" / f"{name}_z{k:04d}.png", overlay(centre, voxel_to_image(labels[:, :, k])))
        table = pd.DataFrame([findings(name, Path(source), on_source, volume, ckpt.classes,
                                       list(ckpt.info.get("image_classes", [])))])
        table.to_csv(out / FINDINGS, index=False)
    return table
