"""The volume formats' schema: what a profile may say, and the error that names the key when it is wrong."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from conftest import REPO
from medseg.config import ConvertConfig, DicomAnnotation, NiftiAnnotation, load_params

CLASSES = ["background", "liver", "tumour"]
NIFTI = {"format": "nifti_volumes", "values": {"liver": 1, "tumour": 2}}
DICOM = {"format": "dicom_series", "structures": {"liver": "liver", "livertumor*": "tumour"},
         "priority": ["tumour", "liver"]}


def test_the_ct_profiles_load_as_volume_formats() -> None:
    params = load_params(REPO / "params.yaml")
    for name, annotation in (("ircadb-liver-ct", DicomAnnotation), ("msd-liver", NiftiAnnotation),
                             ("lits", NiftiAnnotation)):
        cfg = params.dataset(name).convert
        assert isinstance(cfg.annotation, annotation) and cfg.is_volume
        assert cfg.classes == CLASSES and cfg.volume.window == (-200.0, 200.0)
        assert name not in params.active
    assert params.dataset("msd-liver").source.files[0].md5 == "a90ec6c4aa7f6a3d087205e23d4e6397"


@pytest.mark.parametrize(("convert", "message"), [
    ({"annotation": NIFTI, "channels": 3}, "channels: 3, but volume.slices_per_image is 1"),
    ({"annotation": NIFTI, "channels": 3, "volume": {"slices_per_image": 3}}, None),
    ({"annotation": {**NIFTI, "values": {"liver": 1, "cyst": 2}}}, "unknown class 'cyst'"),
    ({"annotation": {**NIFTI, "values": {"liver": 1, "tumour": 1}}}, "two classes share one label value"),
    ({"annotation": {**NIFTI, "values": {"liver": 0, "tumour": 2}}}, "0 is background"),
    ({"annotation": {**NIFTI, "images": "imagesTr/liver.nii.gz"}}, "must hold '{id}'"),
    ({"annotation": {**NIFTI, "labels": "../labels/{id}.nii"}}, "without '..'"),
    ({"annotation": {**NIFTI, "images": "img?/{id}.nii"}}, "only '*' and '{id}'"),
    ({"annotation": {**DICOM, "priority": ["liver"]}}, "priority must list each class of structures once"),
    ({"annotation": {**DICOM, "structures": {"liver": "background"}, "priority": ["background"]}},
     "not 'background'"),
    ({"annotation": DICOM, "group_regex": "(.+)"}, "group_regex: not used with format 'dicom_series'"),
    ({"annotation": DICOM, "layout": {"images": "a", "masks": "b"}}, "layout: not used"),
    ({"annotation": DICOM, "image_class": {"source": "regex", "pattern": "(x)"}}, "use 'mask' or 'fixed'"),
    ({"annotation": DICOM, "volume": {"window": [200, -200]}}, "low < high"),
    ({"annotation": DICOM, "volume": {"spacing": [0.0, 1.0]}}, "spacing must be positive"),
    ({"annotation": DICOM, "volume": {"empty_fraction": 1.5}}, "less than or equal to 1"),
    ({"annotation": DICOM, "volume": {"modality": "MR"}}, "'CT'"),
    ({"annotation": {"format": "binary", "foreground": "liver"}, "layout": {}, "volume": {"seed": 1}},
     "volume: only used with the volume formats"),
])
def test_volume_options_are_checked(convert: dict, message: str | None) -> None:
    if message is None:
        assert ConvertConfig(classes=CLASSES, **convert).channels == 3
        return
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace("?", r"\?").replace("*", r"\*")):
        ConvertConfig(classes=CLASSES, **convert)
