"""CT volumes through convert: the Decathlon, LiTS and 3D-IRCADb layouts into the 2D converted format."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ct_phantom import (
    AIR,
    LIVER,
    LIVER_LABEL,
    TISSUE,
    TUMOUR,
    TUMOUR_LABEL,
    make_phantom,
    write_ircadb,
    write_nifti,
)
from medseg.config import ConvertConfig, SplitConfig
from medseg.data.converted import VOLUME_COLUMNS, ConvertedDataset
from medseg.data.split import split_table
from medseg.data.volumes import read_volumes
from medseg.volumes.convert import convert_volumes

CLASSES = ["background", "liver", "tumour"]
DECATHLON = {"format": "nifti_volumes", "images": "imagesTr/{id}.nii.gz", "labels": "labelsTr/{id}.nii.gz",
             "values": {"liver": 1, "tumour": 2}}
LITS = {"format": "nifti_volumes", "images": "*/volume-{id}.nii", "labels": "*/segmentation-{id}.nii",
        "values": {"liver": 1, "tumour": 2}}
IRCADB = {"format": "dicom_series", "structures": {"liver": "liver", "livertumor*": "tumour"},
          "priority": ["tumour", "liver"]}


def config(annotation: dict, **volume) -> ConvertConfig:
    channels = volume.get("slices_per_image", 1)
    return ConvertConfig(annotation=annotation, classes=CLASSES, channels=channels,
                         volume={"empty_fraction": 0.5, **volume})


def as_image(plane: np.ndarray) -> np.ndarray:
    """An (x, y) RAS plane as radiologists view it: row r is y = Y-1-r (anterior at the top), column c is
    x = X-1-c (the patient's right on the left)."""
    return np.array([[plane[plane.shape[0] - 1 - c, plane.shape[1] - 1 - r] for c in range(plane.shape[0])]
                     for r in range(plane.shape[1])])


def windowed(hu: np.ndarray, low: float = -200, high: float = 200) -> np.ndarray:
    return np.rint(np.clip((np.asarray(hu, float) - low) * 255 / (high - low), 0, 255)).astype(np.uint8)


PHANTOMS = {"liver_0": make_phantom(), "liver_7": make_phantom((36, 30, 16), (0.7, 0.75, 2.0), (5.0, -30.0, -80.0))}


def decathlon(raw: Path) -> Path:
    for (vid, p), axes in zip(PHANTOMS.items(), ["RAS", "LPS"], strict=True):
        write_nifti(raw / "imagesTr" / f"{vid}.nii.gz", p.hu, p.affine, axes)
        write_nifti(raw / "labelsTr" / f"{vid}.nii.gz", p.label, p.affine, axes)
    write_nifti(raw / "imagesTs" / "liver_99.nii.gz", PHANTOMS["liver_0"].hu, PHANTOMS["liver_0"].affine)
    return raw


def test_decathlon_volumes_become_slices_of_the_converted_format(tmp_path: Path) -> None:
    report = convert_volumes(decathlon(tmp_path / "raw"), tmp_path / "out", config(DECATHLON))
    data = ConvertedDataset(tmp_path / "out")
    manifest, geometry = data.manifest, read_volumes(tmp_path / "out")
    assert sorted(geometry) == ["liver_0", "liver_7"]  # imagesTs has no labels and is not in the pattern
    assert report["volumes"] == 2 and report["groups"] == 2
    for vid, phantom in PHANTOMS.items():
        rows = manifest[manifest["volume"] == vid]
        foreground = [k for k in range(phantom.label.shape[2]) if phantom.label[:, :, k].any()]
        empty = phantom.label.shape[2] - len(foreground)
        assert set(foreground) <= set(rows["slice"]) and len(rows) == len(foreground) + round(0.5 * empty)
        assert set(rows["group"]) == {vid}  # one patient, one group
        assert rows[["spacing_x", "spacing_y", "spacing_z"]].drop_duplicates().values.tolist() == [
            pytest.approx(list(phantom.spacing))]
        g = geometry[vid]
        assert g.shape == phantom.hu.shape and list(g.slices) == sorted(rows["slice"])
        np.testing.assert_allclose(g.affine_array, phantom.affine, atol=1e-6)
        for _, row in rows.iterrows():
            image, label = data.read(row["id"])
            k = int(row["slice"])
            np.testing.assert_array_equal(label, as_image(phantom.label[:, :, k]))
            np.testing.assert_array_equal(image, windowed(as_image(phantom.hu[:, :, k])))
    assert report["slices"]["in_volumes"] == sum(p.hu.shape[2] for p in PHANTOMS.values())
    assert list(manifest.columns[-len(VOLUME_COLUMNS):]) == list(VOLUME_COLUMNS)


def test_the_tumour_lies_where_radiologists_look_for_it(tmp_path: Path) -> None:
    """The phantom's tumour is towards the patient's right and front: top left of the image."""
    convert_volumes(decathlon(tmp_path / "raw"), tmp_path / "out", config(DECATHLON))
    data = ConvertedDataset(tmp_path / "out")
    tumour_slices = data.manifest[data.manifest["px_tumour"] > 0]
    assert len(tumour_slices) > 0
    for sid in tumour_slices["id"]:
        _, label = data.read(sid)
        rows, cols = np.nonzero(label == TUMOUR_LABEL)
        liver_rows, liver_cols = np.nonzero(label == LIVER_LABEL)
        assert rows.mean() < liver_rows.mean() and cols.mean() < liver_cols.mean()


def test_window_values_of_the_phantom_tissues(tmp_path: Path) -> None:
    convert_volumes(decathlon(tmp_path / "raw"), tmp_path / "out", config(DECATHLON, window=(-100, 300)))
    data = ConvertedDataset(tmp_path / "out")
    values = set()
    for sid in data.ids:
        image, _ = data.read(sid)
        values |= set(np.unique(image).tolist())
    expected = {int(windowed(np.array(hu), -100, 300)) for hu in (AIR, TISSUE, LIVER, TUMOUR)}
    assert values == expected == {0, 83, 121, 166}


def test_lits_layout_pairs_each_volume_with_its_segmentation(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for n, (batch, phantom) in enumerate(zip(["Training Batch 1", "Training Batch 2"], PHANTOMS.values(),
                                             strict=True)):
        write_nifti(raw / batch / f"volume-{n}.nii", phantom.hu, phantom.affine)
        write_nifti(raw / batch / f"segmentation-{n}.nii", phantom.label, phantom.affine)
    convert_volumes(raw, tmp_path / "out", config(LITS))
    geometry = read_volumes(tmp_path / "out")
    assert sorted(geometry) == ["0", "1"]
    assert geometry["1"].source_image == "Training Batch 2/volume-1.nii"
    assert geometry["1"].source_labels == ("Training Batch 2/segmentation-1.nii",)
    manifest = ConvertedDataset(tmp_path / "out").manifest
    assert set(manifest["volume"]) == {"0", "1"}  # read back as text, like every id


def test_ircadb_masks_become_one_label_map_with_the_tumour_over_the_liver(tmp_path: Path) -> None:
    phantom = PHANTOMS["liver_0"]
    raw = write_ircadb(tmp_path / "3Dircadb1.17", phantom)
    report = convert_volumes(raw, tmp_path / "dicom", config(IRCADB))
    assert any("artery" in note and "not read" in note for note in report["notes"])
    write_nifti(tmp_path / "nifti" / "imagesTr" / "3Dircadb1.17.nii.gz", phantom.hu, phantom.affine, "LPS")
    write_nifti(tmp_path / "nifti" / "labelsTr" / "3Dircadb1.17.nii.gz", phantom.label, phantom.affine, "LPS")
    convert_volumes(tmp_path / "nifti", tmp_path / "from_nifti", config(DECATHLON))
    dicom, nifti = ConvertedDataset(tmp_path / "dicom"), ConvertedDataset(tmp_path / "from_nifti")
    assert dicom.ids == nifti.ids and set(dicom.manifest["group"]) == {"3Dircadb1.17"}
    for sid in dicom.ids:  # one scan, as DICOM series or as NIfTI: the same slices
        for a, b in zip(dicom.read(sid), nifti.read(sid), strict=True):
            np.testing.assert_array_equal(a, b)
    assert int(dicom.manifest["px_tumour"].sum()) == int(phantom.mask(TUMOUR_LABEL).sum())
    np.testing.assert_allclose(read_volumes(tmp_path / "dicom")["3Dircadb1.17"].affine_array, phantom.affine,
                               atol=1e-4)


def test_ircadb_patient_folders_under_one_root(tmp_path: Path) -> None:
    for vid, phantom in PHANTOMS.items():
        write_ircadb(tmp_path / "raw" / f"3Dircadb1.{vid[-1]}", phantom)
    convert_volumes(tmp_path / "raw", tmp_path / "out", config({**IRCADB, "patients": "3Dircadb1.*"}))
    assert sorted(read_volumes(tmp_path / "out")) == ["3Dircadb1.0", "3Dircadb1.7"]


def test_25d_images_hold_the_neighbouring_slices_as_channels(tmp_path: Path) -> None:
    raw = decathlon(tmp_path / "raw")
    convert_volumes(raw, tmp_path / "2d", config(DECATHLON, empty_fraction=1.0))
    convert_volumes(raw, tmp_path / "25d", config(DECATHLON, empty_fraction=1.0, slices_per_image=3))
    flat, stacked = ConvertedDataset(tmp_path / "2d"), ConvertedDataset(tmp_path / "25d")
    assert stacked.channels == 3 and stacked.ids == flat.ids
    depth = PHANTOMS["liver_0"].hu.shape[2]
    for k in (0, 5, depth - 1):
        image, label = stacked.read(f"liver_0_z{k:04d}")
        for channel, j in enumerate((max(k - 1, 0), k, min(k + 1, depth - 1))):
            np.testing.assert_array_equal(image[:, :, channel], flat.read(f"liver_0_z{j:04d}")[0])
        np.testing.assert_array_equal(label, flat.read(f"liver_0_z{k:04d}")[1])  # the label is the middle slice's


def test_in_plane_resampling_to_the_target_spacing(tmp_path: Path) -> None:
    convert_volumes(decathlon(tmp_path / "raw"), tmp_path / "out", config(DECATHLON, spacing=(1.6, 1.8)))
    data, geometry = ConvertedDataset(tmp_path / "out"), read_volumes(tmp_path / "out")
    g = geometry["liver_0"]
    assert g.shape == (20, 16, 14) and g.spacing == pytest.approx((1.6, 1.8, 2.5))
    assert g.source_shape == (40, 32, 14)
    row = data.manifest[data.manifest["volume"] == "liver_0"].iloc[0]
    assert (row["height"], row["width"]) == (16, 20)
    assert (row["spacing_x"], row["spacing_y"], row["spacing_z"]) == pytest.approx((1.6, 1.8, 2.5))
    image, label = data.read(row["id"])
    assert image.shape == label.shape == (16, 20)
    # The field of view is kept: both grids span the same millimetres.
    original = PHANTOMS["liver_0"].affine
    edge = [-0.5, -0.5, 0, 1]
    np.testing.assert_allclose(g.affine_array @ edge, original @ edge, atol=1e-6)


def test_output_follows_the_seed_not_the_workers(tmp_path: Path) -> None:
    raw = decathlon(tmp_path / "raw")
    convert_volumes(raw, tmp_path / "one", config(DECATHLON, seed=1), workers=1)
    convert_volumes(raw, tmp_path / "two", config(DECATHLON, seed=1), workers=2)
    convert_volumes(raw, tmp_path / "other", config(DECATHLON, seed=2), workers=1)
    one, two, other = (pd.read_csv(tmp_path / name / "manifest.csv") for name in ("one", "two", "other"))
    pd.testing.assert_frame_equal(one, two)
    assert (tmp_path / "one" / "volumes.json").read_bytes() == (tmp_path / "two" / "volumes.json").read_bytes()
    assert list(one["id"]) != list(other["id"])


def test_the_split_keeps_every_slice_of_a_volume_on_one_side(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for n in range(8):
        p = make_phantom((24, 20, 8 + n), (1.0, 1.0, 3.0), (0.0, 0.0, 10.0 * n))
        write_nifti(raw / "imagesTr" / f"liver_{n}.nii.gz", p.hu, p.affine)
        write_nifti(raw / "labelsTr" / f"liver_{n}.nii.gz", p.label, p.affine)
    convert_volumes(raw, tmp_path / "out", config(DECATHLON))
    manifest = ConvertedDataset(tmp_path / "out").manifest
    table = split_table(manifest, pd.DataFrame(columns=["id", "source_id"]), SplitConfig(valid=0.25, test=0.25))
    sides = table.groupby("group")["split"].nunique()
    assert len(sides) == 8 and (sides == 1).all()
    assert set(table["split"]) == {"train", "valid", "test"}


def test_on_error_skip_leaves_a_bad_volume_out_and_lists_it(tmp_path: Path) -> None:
    raw = decathlon(tmp_path / "raw")
    bad = PHANTOMS["liver_7"]
    write_nifti(raw / "labelsTr" / "liver_7.nii.gz", bad.label[:, :-1], bad.affine)  # one row short
    cfg = config(DECATHLON).model_copy(update={"on_error": "skip"})
    report = convert_volumes(raw, tmp_path / "out", cfg)
    data = ConvertedDataset(tmp_path / "out")
    assert set(data.manifest["volume"]) == {"liver_0"} and sorted(read_volumes(tmp_path / "out")) == ["liver_0"]
    assert [s["file"] for s in report["skipped"]] == [str(raw / "labelsTr" / "liver_7.nii.gz")]
    written = {p.stem for p in (tmp_path / "out" / "images").iterdir()}
    assert written == set(data.ids)  # no slice of the skipped volume on disk
