"""Folder layouts beyond one images/masks pair: class folders, several masks per image, image classes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from conftest import ramp, save
from medseg.config import ConvertConfig
from medseg.formats.convert import convert_dataset
from medseg.io.errors import DataError

CLASSES = ["background", "lesion"]


def cfg(layout: dict, image_class: dict | None = None, **kw) -> ConvertConfig:
    return ConvertConfig(annotation={"format": "grey", "values": {"background": 0, "lesion": 255}},
                         classes=CLASSES, channels=1, layout=layout,
                         image_class=image_class or {"source": "folder"}, **kw)


def square(top: int = 5, left: int = 5, size: int = 4, shape=(24, 32)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[top:top + size, left:left + size] = 255
    return mask


def busi_like(raw: Path, folder: str, n: int, masks: int = 1) -> None:
    """BUSI as published: ``<class>/<class> (n).png`` beside ``<class> (n)_mask.png`` (and ``_mask_1``...)."""
    save(raw / folder / f"{folder} ({n}).png", ramp(24, 32, 1))
    for k in range(masks):
        suffix = "" if k == 0 else f"_{k}"
        save(raw / folder / f"{folder} ({n})_mask{suffix}.png", square(top=2 + 6 * k))


BUSI = {"images": ".", "masks": ".", "mask_name": "{stem}_mask", "class_folders": ["benign", "malignant"]}


def manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype=str)


# --------------------------------------------------------------------------- class folders
def test_class_folders_side_by_side_take_the_class_from_the_folder(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    busi_like(raw, "benign", 1)
    busi_like(raw, "benign", 2)
    busi_like(raw, "malignant", 1)
    report = convert_dataset(raw, out, cfg(BUSI), workers=1)
    m = manifest(out)
    assert m["id"].tolist() == ["benign_1", "benign_2", "malignant_1"]  # already prefixed by the class
    assert m["image_class"].tolist() == ["benign", "benign", "malignant"]
    assert m["source_image"].tolist() == ["benign/benign (1).png", "benign/benign (2).png",
                                          "malignant/malignant (1).png"]
    assert m["source_mask"].tolist()[0] == "benign/benign (1)_mask.png"
    assert report["image_classes"] == {"benign": 2, "malignant": 1}


def test_class_folders_with_images_and_masks_keep_ids_unique(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    for folder in ("Benign", "Malignant"):
        save(raw / folder / "images" / "1.png", ramp(24, 32, 1))
        save(raw / folder / "masks" / "1_mask.png", square())
    (raw / "extra").mkdir()
    layout = {"images": "images", "masks": "masks", "mask_name": "{stem}_mask",
              "class_folders": ["Benign", "Malignant"]}
    report = convert_dataset(raw, out, cfg(layout), workers=1)
    assert manifest(out)["id"].tolist() == ["Benign_1", "Malignant_1"]
    assert report["image_classes"] == {"Benign": 1, "Malignant": 1}
    assert any("extra" in note for note in report["notes"])


def test_missing_class_folder_is_an_error_naming_it(tmp_path):
    raw = tmp_path / "raw"
    busi_like(raw, "benign", 1)
    with pytest.raises(DataError, match="class folder not found") as err:
        convert_dataset(raw, tmp_path / "out", cfg(BUSI), workers=1)
    assert str(err.value).startswith(str(raw / "malignant"))


@pytest.mark.parametrize(("layout", "image_class", "message"), [
    ({"class_folders": []}, {"source": "folder"}, "'folder' needs layout.class_folders"),
    ({"class_folders": ["a/b"]}, {"source": "folder"}, "not a folder name"),
    ({"class_folders": ["a", "a"]}, {"source": "folder"}, "must be unique"),
])
def test_class_folder_options_are_validated(layout, image_class, message):
    with pytest.raises(ValidationError, match=message):
        cfg(layout, image_class)


# --------------------------------------------------------------------------- several masks per image
BUSI_ALL = {**BUSI, "mask_name": "{stem}_mask*"}


def test_several_masks_are_merged_and_counted(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    busi_like(raw, "benign", 1, masks=3)   # benign (1)_mask, _mask_1, _mask_2: three squares
    busi_like(raw, "benign", 10)           # must not be claimed by 'benign (1)'
    busi_like(raw, "malignant", 1)
    report = convert_dataset(raw, out, cfg(BUSI_ALL), workers=1)
    m = manifest(out).set_index("id")
    assert int(m.loc["benign_1", "px_lesion"]) == 3 * 16
    assert m.loc["benign_1", "source_mask"] == ("benign/benign (1)_mask.png;benign/benign (1)_mask_1.png;"
                                                "benign/benign (1)_mask_2.png")
    assert m.loc["benign_10", "source_mask"] == "benign/benign (10)_mask.png"
    assert report["masks_per_image"] == {"1": 2, "3": 1}
    assert report["several_masks"] == {"benign/benign (1).png": 3}


def test_without_the_star_a_second_mask_is_not_silently_dropped(tmp_path):
    raw = tmp_path / "raw"
    busi_like(raw, "benign", 1, masks=2)
    busi_like(raw, "malignant", 1)
    with pytest.raises(DataError, match=r"benign \(1\)_mask_1.png: no mask named 'benign \(1\)_mask_1_mask'"):
        convert_dataset(raw, tmp_path / "out", cfg(BUSI), workers=1)


def test_masks_that_disagree_on_a_pixel_are_an_error_naming_both(tmp_path):
    raw = tmp_path / "raw"
    save(raw / "images" / "a.png", ramp(24, 32, 1))
    save(raw / "masks" / "a_mask.png", square(top=5))
    grey = square(top=7)
    grey[grey == 255] = 128
    save(raw / "masks" / "a_mask_1.png", grey)
    three = ConvertConfig(annotation={"format": "grey", "values": {"background": 0, "cyst": 128, "nodule": 255}},
                          classes=["background", "cyst", "nodule"], channels=1,
                          layout={"images": "images", "masks": "masks", "mask_name": "{stem}_mask*"},
                          image_class={"source": "fixed", "value": "x"})
    with pytest.raises(DataError, match=r"a_mask_1.png: 8 pixel\(s\) are 'cyst' here but 'nodule' in a_mask.png"):
        convert_dataset(raw, tmp_path / "out", three, workers=1)


def test_a_mask_two_images_would_claim_is_an_error(tmp_path):
    raw = tmp_path / "raw"
    for stem in ("a", "a_1"):
        save(raw / "images" / f"{stem}.png", ramp(24, 32, 1))
    save(raw / "masks" / "a.png", square())
    save(raw / "masks" / "a_1.png", square())
    with pytest.raises(DataError, match="also matches another image's mask name"):
        convert_dataset(raw, tmp_path / "out", cfg({"mask_name": "{stem}*"}, {"source": "mask"}), workers=1)


@pytest.mark.parametrize("name", ["{stem}*_mask", "{stem}_mask**", "*{stem}"])
def test_a_star_may_only_end_the_mask_name(name):
    with pytest.raises(ValidationError, match="may only end the name"):
        cfg({"mask_name": name}, {"source": "mask"})
