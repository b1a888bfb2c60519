"""Bad volumes through the convert stage, as a user runs it: exit 1, one message naming the file and the problem,
and no converted output (nor a temporary sibling of it) left behind."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO
from ct_phantom import SeriesOptions, make_phantom, write_ircadb, write_nifti

DS = "ct"
RAW, CONVERTED = Path("data/raw") / DS, Path("data/converted") / DS
CLASSES = ["background", "liver", "tumour"]
NIFTI = {"format": "nifti_volumes", "values": {"liver": 1, "tumour": 2}}
DICOM = {"format": "dicom_series", "structures": {"liver": "liver", "livertumor*": "tumour"},
         "priority": ["tumour", "liver"]}
PHANTOM = make_phantom()


def convert(work: Path, annotation: dict) -> subprocess.CompletedProcess:
    params = {"active": [DS], "datasets": {DS: {
        "source": {"kind": "local", "path": "unused"},
        "convert": {"annotation": annotation, "classes": CLASSES, "channels": 1}}}}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return subprocess.run([sys.executable, str(REPO / "stages" / "convert.py"), DS], cwd=work, env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)


def nifti_pair(raw: Path, label: np.ndarray = PHANTOM.label, label_affine: np.ndarray = PHANTOM.affine) -> None:
    """A bad pair liver_3 beside a good one, liver_4, whose slices must not be left behind either."""
    write_nifti(raw / "imagesTr" / "liver_4.nii.gz", PHANTOM.hu, PHANTOM.affine)
    write_nifti(raw / "labelsTr" / "liver_4.nii.gz", PHANTOM.label, PHANTOM.affine)
    write_nifti(raw / "imagesTr" / "liver_3.nii.gz", PHANTOM.hu, PHANTOM.affine)
    write_nifti(raw / "labelsTr" / "liver_3.nii.gz", label, label_affine)


def shifted(affine: np.ndarray, mm: float) -> np.ndarray:
    moved = affine.copy()
    moved[2, 3] += mm
    return moved


CASES: dict[str, tuple[dict, Callable[[Path], None], tuple[str, ...]]] = {
    "dicom slice missing": (DICOM, lambda raw: write_ircadb(raw, PHANTOM, SeriesOptions(drop=[6])),
                            ("data/raw/ct/PATIENT_DICOM:", "1 slice(s) missing: number(s) 7 between image_6 and "
                                                          "image_8")),
    "dicom slices of two sizes": (DICOM, lambda raw: write_ircadb(raw, PHANTOM, SeriesOptions(resize={4: (30, 40)})),
                                  ("data/raw/ct/PATIENT_DICOM/image_5:", "slice is 40x30 pixels but image_1 is "
                                                                         "40x32")),
    "mask series with another slice count": (
        DICOM, lambda raw: write_ircadb(raw, PHANTOM, mask_options={"livertumor1": SeriesOptions(first_number=0,
                                                                                                 drop=[13])}),
        ("data/raw/ct/MASKS_DICOM/livertumor1:", "has 13 slices but the image data/raw/ct/PATIENT_DICOM has 14")),
    "dicom of MR where CT is expected": (
        DICOM, lambda raw: write_ircadb(raw, PHANTOM, SeriesOptions(modality="MR")),
        ("data/raw/ct/PATIENT_DICOM/image_1:", "modality is 'MR' but the profile expects CT")),
    "nifti label of another shape": (
        NIFTI, lambda raw: nifti_pair(raw, label=PHANTOM.label[:-2]),
        ("data/raw/ct/labelsTr/liver_3.nii.gz:", "is 38x32x14 voxels but image liver_3.nii.gz is 40x32x14")),
    "nifti label with fewer slices": (
        NIFTI, lambda raw: nifti_pair(raw, label=PHANTOM.label[:, :, :-2]),
        ("data/raw/ct/labelsTr/liver_3.nii.gz:", "has 12 slices but the image data/raw/ct/imagesTr/liver_3.nii.gz "
                                                 "has 14")),
    "nifti label on another grid": (
        NIFTI, lambda raw: nifti_pair(raw, label_affine=shifted(PHANTOM.affine, 5.0)),
        ("data/raw/ct/labelsTr/liver_3.nii.gz:", "lies up to 5 mm away from image liver_3.nii.gz's grid")),
    "nifti label value not in the profile": (
        NIFTI, lambda raw: nifti_pair(raw, label=np.where(PHANTOM.label == 2, 7, PHANTOM.label).astype(np.uint8)),
        ("data/raw/ct/labelsTr/liver_3.nii.gz:", "label value(s) not in annotation.values", "7 (")),
    "nifti image without a label": (
        NIFTI, lambda raw: write_nifti(raw / "imagesTr" / "liver_3.nii.gz", PHANTOM.hu, PHANTOM.affine),
        ("data/raw/ct/imagesTr/liver_3.nii.gz:", "no label volume 'labelsTr/liver_3.nii.gz'")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_volume_is_refused_and_leaves_no_output(tmp_path: Path, case: str) -> None:
    annotation, make, expected = CASES[case]
    make(tmp_path / RAW)
    proc = convert(tmp_path, annotation)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for words in expected:
        assert words in proc.stderr, f"{words!r} not in:\n{proc.stderr}"
    assert not (tmp_path / CONVERTED).exists()
    assert [p.name for p in (tmp_path / CONVERTED.parent).glob(f".{DS}.*")] == []


def test_the_same_folder_converts_once_repaired(tmp_path: Path) -> None:
    """The cases above fail for their fault alone: the intact phantom converts."""
    write_ircadb(tmp_path / RAW, PHANTOM)
    proc = convert(tmp_path, DICOM)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / CONVERTED / "volumes.json").is_file()
