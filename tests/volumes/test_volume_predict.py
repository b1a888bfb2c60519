"""predict on CT volumes: NIfTI files and DICOM series in, a NIfTI label volume on the input's own grid out."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from ct_phantom import SeriesOptions, make_phantom, write_nifti, write_series
from medseg.config import ConvertConfig, ModelConfig, VolumeSlicing
from medseg.data.converted import ConvertedDataset
from medseg.evaluate.predict import input_kind
from medseg.evaluate.predict_volume import predict_volume, to_source_grid
from medseg.io.errors import DataError
from medseg.model.checkpoint import save_checkpoint
from medseg.model.factory import build_model
from medseg.train.run import volume_facts
from medseg.volumes.convert import convert_volumes
from medseg.volumes.dicom import read_series
from medseg.volumes.nifti import read_nifti
from medseg.volumes.slicing import InPlaneGrid

CLASSES = ["background", "liver", "tumour"]
PHANTOM = make_phantom()  # (40, 32, 14) voxels of 0.8 x 0.9 x 2.5 mm


def checkpoint(path: Path, volume: dict | None = None, channels: int = 1) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(base_filters=4, depth=2, stem_stride=2)
    info = {"image_classes": ["liver", "normal", "tumour"]}
    if volume is not None:
        info["volume"] = VolumeSlicing(**volume).model_dump(mode="json")
    save_checkpoint(path, build_model(cfg, channels, len(CLASSES)).state_dict(), cfg, CLASSES, channels, (32, 32),
                    info)
    return path


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return checkpoint(tmp_path / "model.pt", {})


def stored(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    return np.asanyarray(image.dataobj), image.affine


@pytest.mark.parametrize("axes", ["LPS", "ASR", "PIL"])
def test_volume_predict_writes_the_label_volume_on_the_inputs_own_grid(tmp_path: Path, model: Path,
                                                                       axes: str) -> None:
    scan = write_nifti(tmp_path / f"ct_{axes}.nii.gz", PHANTOM.hu, PHANTOM.affine, axes)
    table = predict_volume(model, scan, tmp_path / "out", "cpu", overlays=2)
    data, affine = stored(scan)
    labels, out_affine = stored(tmp_path / "out" / f"ct_{axes}.nii.gz")
    assert labels.shape == data.shape and labels.dtype == np.uint8
    assert np.array_equal(out_affine, affine)
    assert set(np.unique(labels)) <= {0, 1, 2}
    overlays = sorted((tmp_path / "out" / "overlays").iterdir())
    assert 1 <= len(overlays) <= 2 and all(p.name.startswith(f"ct_{axes}_z") for p in overlays)
    row = table.iloc[0]
    assert row["shape"] == "x".join(map(str, data.shape)) and row["output"] == f"ct_{axes}.nii.gz"
    assert row["vx_liver"] + row["vx_tumour"] == int(np.count_nonzero(labels))
    assert row["ml_liver"] == pytest.approx(row["vx_liver"] * 0.8 * 0.9 * 2.5 / 1000, abs=1e-3)
    assert pd.read_csv(tmp_path / "out" / "findings.csv").shape[0] == 1


@pytest.mark.parametrize("axes", ["RAS", "LPS", "ASR", "IPL"])
def test_volume_labels_fed_through_the_inverse_path_come_back_exactly(tmp_path: Path, axes: str) -> None:
    path = write_nifti(tmp_path / "label.nii.gz", PHANTOM.label, PHANTOM.affine, axes)
    volume = read_nifti(path)  # the RAS grid predict works on
    grid = InPlaneGrid.for_spacing(volume.shape[:2], volume.spacing[:2], None)
    back = to_source_grid(volume.data.astype(np.uint8), grid, volume.source_affine)
    np.testing.assert_array_equal(back, stored(path)[0])


def test_volume_resampled_labels_come_back_on_the_source_grid(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "label.nii.gz", PHANTOM.label, PHANTOM.affine, "LPS")
    volume = read_nifti(path)
    grid = InPlaneGrid.for_spacing(volume.shape[:2], volume.spacing[:2], (1.6, 1.8))  # half the voxels per axis
    assert grid.size == (20, 16)
    coarse = np.stack([grid.label(volume.data[:, :, k]) for k in range(volume.shape[2])], axis=-1)
    back = to_source_grid(coarse, grid, volume.source_affine)
    original = stored(path)[0]
    assert back.shape == original.shape
    # Nearest neighbour down and up by 2: each 2 x 2 block takes one of its voxels, so the masks nearly agree.
    liver = (back > 0), (original > 0)
    assert 2 * (liver[0] & liver[1]).sum() / (liver[0].sum() + liver[1].sum()) > 0.9


def test_volume_predict_on_a_dicom_series_uses_the_series_grid(tmp_path: Path, model: Path) -> None:
    series = write_series(tmp_path / "PATIENT_DICOM", PHANTOM.hu, PHANTOM.affine)
    assert input_kind(series) == "dicom"
    predict_volume(model, series, tmp_path / "out", "cpu")
    labels, affine = stored(tmp_path / "out" / "PATIENT_DICOM.nii.gz")
    volume = read_series(series)
    assert labels.shape == volume.source_shape == (40, 32, 14)  # (columns, rows, slices)
    np.testing.assert_allclose(affine, volume.source_affine, atol=1e-4)


def test_volume_predict_25d_model_takes_the_neighbours_as_channels(tmp_path: Path) -> None:
    model = checkpoint(tmp_path / "model.pt", {"slices_per_image": 3, "spacing": (1.6, 1.8)}, channels=3)
    scan = write_nifti(tmp_path / "ct.nii", PHANTOM.hu, PHANTOM.affine, "LPS")
    predict_volume(model, scan, tmp_path / "out", "cpu")
    labels, affine = stored(tmp_path / "out" / "ct.nii.gz")
    assert labels.shape == PHANTOM.hu.shape and np.array_equal(affine, stored(scan)[1])


def test_volume_predict_refuses_a_scan_with_channels_for_a_25d_model(tmp_path: Path) -> None:
    model = checkpoint(tmp_path / "model.pt", {"slices_per_image": 3}, channels=3)
    stacked = np.stack([PHANTOM.hu] * 3, axis=-1)
    scan = tmp_path / "three.nii.gz"
    nib.save(nib.Nifti1Image(stacked, PHANTOM.affine), scan)
    with pytest.raises(DataError, match=r"three\.nii\.gz.*3 value\(s\) per voxel.*3 input channel\(s\) from 3 "
                                        "neighbouring slice"):
        predict_volume(model, scan, tmp_path / "out", "cpu")
    assert not (tmp_path / "out").exists()


def test_volume_predict_names_the_gap_in_a_dicom_series(tmp_path: Path, model: Path) -> None:
    series = write_series(tmp_path / "PATIENT_DICOM", PHANTOM.hu, PHANTOM.affine, SeriesOptions(drop=(5,)))
    with pytest.raises(DataError, match=r"PATIENT_DICOM.*1 slice\(s\) missing: number\(s\) 6 between image_5 and "
                                        "image_7"):
        predict_volume(model, series, tmp_path / "out", "cpu")
    assert not (tmp_path / "out").exists()


def test_volume_predict_needs_a_model_trained_on_volumes(tmp_path: Path) -> None:
    model = checkpoint(tmp_path / "model2d.pt")
    scan = write_nifti(tmp_path / "ct.nii.gz", PHANTOM.hu, PHANTOM.affine)
    with pytest.raises(DataError, match=r"model2d\.pt.*keeps no CT volume settings"):
        predict_volume(model, scan, tmp_path / "out", "cpu")


def test_volume_predict_input_kinds(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"notes\.txt.*not a NIfTI volume"):
        input_kind(tmp_path / "notes.txt")
    assert input_kind(write_nifti(tmp_path / "a.nii", PHANTOM.label, PHANTOM.affine)) == "nifti"


def test_volume_checkpoint_keeps_converts_volume_settings(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_nifti(raw / "imagesTr" / "liver_1.nii.gz", PHANTOM.hu, PHANTOM.affine)
    write_nifti(raw / "labelsTr" / "liver_1.nii.gz", PHANTOM.label, PHANTOM.affine)
    cfg = ConvertConfig(annotation={"format": "nifti_volumes", "values": {"liver": 1, "tumour": 2}}, classes=CLASSES,
                        volume={"window": (-100, 250), "spacing": (1.0, 1.0)})
    convert_volumes(raw, tmp_path / "out", cfg)
    facts = volume_facts(ConvertedDataset(tmp_path / "out"))
    assert VolumeSlicing.model_validate(facts["volume"]) == cfg.volume


def test_volume_predict_command_line(tmp_path: Path, model: Path) -> None:
    scan = write_nifti(tmp_path / "ct.nii.gz", PHANTOM.hu, PHANTOM.affine, "LPS")
    proc = subprocess.run([sys.executable, str(REPO / "stages/predict.py"), "--model", str(model), "--input",
                           str(scan), "--output", str(tmp_path / "out"), "--device", "cpu"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "ct.nii.gz").is_file() and "mL" in proc.stderr
