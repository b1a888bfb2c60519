"""The shared 3D-IRCADb patient (liver_17, slices N=69..113) through the repository's own profile."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from conftest import REPO, shared_dataset
from medseg.config import ModelConfig, load_params
from medseg.data.converted import ConvertedDataset
from medseg.data.volumes import read_volumes
from medseg.evaluate.predict_volume import predict_volume
from medseg.model.checkpoint import save_checkpoint
from medseg.model.factory import build_model
from medseg.volumes.convert import convert_volumes
from medseg.volumes.dicom import read_series

FIRST = 69  # the file number (and InstanceNumber) of the patient's first slice here


def test_ircadb_patient_gives_45_slices_with_liver_and_the_tumours_where_documented(tmp_path: Path) -> None:
    raw = shared_dataset("ircadb-liver-ct")
    cfg = load_params(REPO / "params.yaml").dataset("ircadb-liver-ct").convert
    report = convert_volumes(raw, tmp_path / "out", cfg)
    data = ConvertedDataset(tmp_path / "out")
    manifest = data.manifest
    assert len(manifest) == 45 and report["slices"]["empty_left_out"] == 0
    assert (manifest["px_liver"] > 0).all()  # SOURCE.txt: liver present on all 45
    # SOURCE.txt: livertumor1 on N=84..113, livertumor2 on N=78..105; z runs inferior to superior with N.
    tumour = sorted(int(k) + FIRST for k in manifest.loc[manifest["px_tumour"] > 0, "slice"])
    assert tumour == list(range(78, 114))
    assert set(manifest["group"]) == {"ircadb-liver-ct"}
    g = read_volumes(tmp_path / "out")["ircadb-liver-ct"]
    assert g.shape == (512, 512, 45) and g.spacing == pytest.approx((0.743, 0.743, 1.6), abs=1e-6)
    # A slice as written is the scanner's slice N, windowed: same orientation, same pixels.
    for k in (0, 21, 44):
        stored = pydicom.dcmread(raw / "PATIENT_DICOM" / f"image_{k + FIRST}")
        hu = stored.pixel_array * float(stored.RescaleSlope) + float(stored.RescaleIntercept)
        expected = np.rint(np.clip((hu + 200) * 255 / 400, 0, 255)).astype(np.uint8)
        image, label = data.read(f"ircadb-liver-ct_z{k:04d}")
        np.testing.assert_array_equal(image, expected)
        liver = pydicom.dcmread(raw / "MASKS_DICOM" / "liver" / f"image_{k + FIRST}").pixel_array > 0
        assert ((label > 0) == liver).all()  # the tumours lie inside the liver mask


def test_predict_on_the_ircadb_series_writes_labels_on_the_series_grid(tmp_path: Path) -> None:
    """The geometry of predict on the real series (an untrained model: the labels are not the point)."""
    raw = shared_dataset("ircadb-liver-ct")
    cfg = load_params(REPO / "params.yaml").dataset("ircadb-liver-ct").convert
    torch.manual_seed(0)
    model_cfg = ModelConfig(base_filters=4, depth=2, stem_stride=2)
    save_checkpoint(tmp_path / "model.pt", build_model(model_cfg, 1, 3).state_dict(), model_cfg, cfg.classes, 1,
                    (64, 64), {"volume": cfg.volume.model_dump(mode="json")})
    table = predict_volume(tmp_path / "model.pt", raw / "PATIENT_DICOM", tmp_path / "out", "cpu")
    written = nib.load(tmp_path / "out" / "PATIENT_DICOM.nii.gz")
    series = read_series(raw / "PATIENT_DICOM", "CT")
    assert written.shape == series.source_shape == (512, 512, 45)
    np.testing.assert_allclose(written.affine, series.source_affine, atol=1e-3)
    assert table.iloc[0]["voxel_ml"] == pytest.approx(0.743 * 0.743 * 1.6 / 1000, rel=1e-3)
