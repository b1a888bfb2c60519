"""Folder layouts beyond one images/masks pair: class folders, several masks per image, image classes."""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from conftest import REPO, ramp, save, shared_dataset
from medseg.config import ConvertConfig, ImageClassRule, load_params
from medseg.data.converted import ConvertedDataset
from medseg.formats.convert import convert_dataset
from medseg.formats.discover import discover
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


# --------------------------------------------------------------------------- images and masks in one folder
def test_a_shared_folder_tells_masks_from_images_by_the_mask_name(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    for stem in ("case_1", "case_2"):
        save(raw / "scans" / f"{stem}.png", ramp(24, 32, 1))
        save(raw / "scans" / f"{stem}_mask.png", square())
    save(raw / "scans" / "case_3_mask.png", square())   # a mask whose image is missing
    layout = {"images": "scans", "masks": "scans", "mask_name": "{stem}_mask"}
    report = convert_dataset(raw, out, cfg(layout, {"source": "fixed", "value": "scan"}), workers=1)
    assert manifest(out)["id"].tolist() == ["case_1", "case_2"]
    assert manifest(out)["source_mask"].tolist() == ["scans/case_1_mask.png", "scans/case_2_mask.png"]
    # Only the orphan is a mask without an image (before: every image was one, and case_3_mask an image).
    assert report["notes"] == ["1 mask file(s) without an image, e.g. ['case_3_mask']"]
    assert report["skipped"] == []


def test_a_shared_folder_with_the_image_s_own_name_tells_masks_by_extension(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    for stem in ("a", "b"):
        save(raw / "data" / f"{stem}.jpg", ramp(24, 32, 1))
        save(raw / "data" / f"{stem}.png", square())
    layout = {"images": "data", "masks": "data", "mask_name": "{stem}", "image_exts": [".jpg"],
              "mask_exts": [".png"]}
    report = convert_dataset(raw, out, cfg(layout, {"source": "fixed", "value": "scan"}), workers=1)
    assert manifest(out)["source_mask"].tolist() == ["data/a.png", "data/b.png"] and report["notes"] == []
    with pytest.raises(DataError, match=r"image_exts and mask_exts both hold \['.png'\]") as err:
        convert_dataset(raw, tmp_path / "out2", cfg({**layout, "image_exts": [".jpg", ".png"]},
                                                    {"source": "fixed", "value": "scan"}), workers=1)
    assert str(err.value).startswith(str(raw / "data")) and not (tmp_path / "out2").exists()


# --------------------------------------------------------------------------- image class from the name or a CSV
def flat(raw: Path, *stems: str) -> None:
    for stem in stems:
        save(raw / "images" / f"{stem}.png", ramp(24, 32, 1))
        save(raw / "masks" / f"{stem}.png", square())


FLAT = {"images": "images", "masks": "masks", "mask_name": "{stem}"}


def test_image_class_from_a_regex_on_the_name(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    flat(raw, "p1_benign_3", "p2_malignant_1")
    convert_dataset(raw, out, cfg(FLAT, {"source": "regex", "pattern": r"_(benign|malignant)_"}), workers=1)
    assert manifest(out)["image_class"].tolist() == ["benign", "malignant"]
    flat(raw, "p3_other")
    with pytest.raises(DataError, match=r"p3_other.png: name does not match image_class.pattern"):
        convert_dataset(raw, tmp_path / "out2", cfg(FLAT, {"source": "regex", "pattern": r"_(benign|malignant)_"}),
                        workers=1)


CSV_RULE = {"source": "csv", "path": "meta/diagnosis.csv", "id_column": "id", "class_column": "TI-RADS",
            "id_pattern": r"^(\d+)_", "unknown": "unknown"}


def test_image_class_from_a_csv_with_blanks_as_unknown(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    flat(raw, "1_1", "2_1(1)", "2_1(2)", "10_1")
    (raw / "meta").mkdir()
    (raw / "meta" / "diagnosis.csv").write_text("id,TI-RADS\n1,\n2,4a\n10,5\n")
    report = convert_dataset(raw, out, cfg(FLAT, CSV_RULE), workers=1)
    assert dict(zip(manifest(out)["id"], manifest(out)["image_class"], strict=True)) == {
        "10_1": "5", "1_1": "unknown", "2_1_1": "4a", "2_1_2": "4a"}
    assert report["image_classes"] == {"4a": 2, "5": 1, "unknown": 1}
    with pytest.raises(DataError, match=r"1_1.png: blank 'TI-RADS' for '1'"):
        convert_dataset(raw, tmp_path / "out2", cfg(FLAT, {**CSV_RULE, "unknown": None}), workers=1)


@pytest.mark.parametrize(("text", "message"), [
    ("id,diagnosis\n1,2\n", "diagnosis.csv: no column 'TI-RADS' \\(image_class.class_column\\); the columns are"),
    ("id,TI-RADS\n1,2\n1,3\n", "diagnosis.csv: id\\(s\\) listed twice in column 'id': \\['1'\\]"),
    ("id,TI-RADS\n3,2\n", "1_1.png: no row with id '1' in .*diagnosis.csv"),
    (None, "diagnosis.csv: image_class CSV not found"),
])
def test_csv_problems_name_the_file(tmp_path, text, message):
    raw = tmp_path / "raw"
    flat(raw, "1_1")
    (raw / "meta").mkdir()
    if text is not None:
        (raw / "meta" / "diagnosis.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        convert_dataset(raw, tmp_path / "out", cfg(FLAT, CSV_RULE), workers=1)


@pytest.mark.parametrize(("rule", "message"), [
    ({"source": "csv", "path": "d.csv", "id_column": "id"}, "source 'csv' needs 'class_column'"),
    ({**CSV_RULE, "path": "../d.csv"}, "must be relative to the dataset's raw folder"),
    ({"source": "regex", "pattern": "benign"}, "needs a capture group for the class"),
    ({"source": "regex", "pattern": "(a", "value": "x"}, "invalid regex"),
    ({"source": "fixed", "value": "x", "pattern": "(a)"}, "'pattern': not used by source 'fixed'"),
    ({"source": "fixed"}, "source 'fixed' needs 'value'"),
])
def test_image_class_options_are_validated(rule, message):
    with pytest.raises(ValidationError, match=message):
        cfg(FLAT, rule)


def test_ddti_diagnosis_csv_classes_every_image(tmp_path):
    raw = shared_dataset("ddti-thyroid")
    profile = load_params(REPO / "params.yaml").dataset("ddti-thyroid").convert
    rule = {"source": "csv", "path": "diagnosis.csv", "id_column": "id", "class_column": "TI-RADS",
            "id_pattern": r"^(\d+)_", "unknown": "unknown"}
    found = discover(raw, profile.model_copy(update={"image_class": ImageClassRule(**rule)}))
    assert found.problems == [] and len(found.samples) == 655
    classes = Counter(s.image_class for s in found.samples)
    assert set(classes) == {"2", "3", "4a", "4b", "4c", "5", "unknown"}
    assert next(s.image_class for s in found.samples if s.image.stem == "3_1") == "4a"  # diagnosis.csv: 3,4a


def test_busi_sample_laid_out_as_published(tmp_path):
    """The real BUSI files side by side in a class folder: names like 'malignant (10)' and 'malignant (104)'."""
    src = shared_dataset("busi-malignant-mini")
    raw = tmp_path / "raw"
    (raw / "malignant").mkdir(parents=True)
    for path in [*(src / "images").iterdir(), *(src / "masks").iterdir()]:
        shutil.copy(path, raw / "malignant" / path.name)
    busi = ConvertConfig(annotation={"format": "binary", "foreground": "lesion"}, classes=CLASSES, channels=1,
                         layout={"images": ".", "masks": ".", "mask_name": "{stem}_mask*",
                                 "class_folders": ["malignant"]},
                         image_class={"source": "folder"})
    report = convert_dataset(raw, tmp_path / "out", busi, workers=2)
    m = manifest(tmp_path / "out")
    assert report["count"] == 42 and report["masks_per_image"] == {"1": 42} and report["skipped"] == []
    assert report["notes"] == []   # no image taken for a mask without one
    assert report["image_classes"] == {"malignant": 42}
    assert all(i.startswith("malignant_") and not i.startswith("malignant_malignant") for i in m["id"])
    assert all(mask == f"{img[:-4]}_mask.jpg" for img, mask in zip(m["source_image"], m["source_mask"], strict=True))


# --------------------------------------------------------------------------- published split folders
SPLIT_FOLDERS = {"train": "train/train", "valid": "valid/valid", "test": "test/test"}


def published_split(raw: Path, names: dict[str, list[str]]) -> None:
    """A dataset as published pre-split: ``<split>/<split>/images/X.png`` beside ``.../masks/X.png``."""
    for split, stems in names.items():
        for stem in stems:
            save(raw / SPLIT_FOLDERS[split] / "images" / f"{stem}.png", ramp(24, 32, 1))
            save(raw / SPLIT_FOLDERS[split] / "masks" / f"{stem}.png", square())


def test_split_folders_record_each_image_s_published_split_in_the_manifest(tmp_path):
    published_split(tmp_path / "raw", {"train": ["Image_01L", "Image_02L"], "valid": ["Image_01R"],
                                       "test": ["Image_02R"]})
    layout = {"split_folders": SPLIT_FOLDERS}
    convert_dataset(tmp_path / "raw", tmp_path / "out", cfg(layout, {"source": "fixed", "value": "fundus"},
                                                            group_regex=r"^Image_(\d+)[LR]$"))
    manifest = ConvertedDataset(tmp_path / "out").manifest
    assert manifest.set_index("id")["published_split"].to_dict() == {
        "Image_01L": "train", "Image_01R": "valid", "Image_02L": "train", "Image_02R": "test"}
    assert manifest.set_index("id")["source_image"]["Image_02R"] == "test/test/images/Image_02R.png"


def test_an_id_in_two_split_folders_is_an_error(tmp_path):
    published_split(tmp_path / "raw", {"train": ["a"], "test": ["a"]})
    two = {s: f for s, f in SPLIT_FOLDERS.items() if s != "valid"}  # a dataset published without valid
    with pytest.raises(DataError, match="'a' clashes with"):
        discover(tmp_path / "raw", cfg({"split_folders": two}, {"source": "fixed", "value": "x"}))


def test_a_missing_split_folder_is_named(tmp_path):
    published_split(tmp_path / "raw", {"train": ["a"], "test": ["b"]})
    with pytest.raises(DataError, match="valid/valid.*split folder not found"):
        discover(tmp_path / "raw", cfg({"split_folders": SPLIT_FOLDERS}, {"source": "fixed", "value": "x"}))


def test_without_split_folders_the_column_is_empty_and_old_manifests_read_as_empty(tmp_path):
    save(tmp_path / "raw" / "images" / "a.png", ramp(24, 32, 1))
    save(tmp_path / "raw" / "masks" / "a.png", square())
    convert_dataset(tmp_path / "raw", tmp_path / "out", cfg({}, {"source": "fixed", "value": "x"}))
    assert ConvertedDataset(tmp_path / "out").manifest["published_split"].tolist() == [""]
    old = pd.read_csv(tmp_path / "out" / "manifest.csv").drop(columns="published_split")
    old.to_csv(tmp_path / "out" / "manifest.csv", index=False)
    assert ConvertedDataset(tmp_path / "out").manifest["published_split"].tolist() == [""]


@pytest.mark.parametrize(("layout", "message"), [
    ({"split_folders": {"train": "../train"}}, "without '..'"),
    ({"split_folders": {"train": "a", "test": "a"}}, "two splits name one folder"),
    ({"split_folders": {"training": "a"}}, "train"),
    ({"split_folders": {"train": "a"}, "class_folders": ["benign"]}, "exclude each other"),
])
def test_bad_split_folders_are_schema_errors(layout, message):
    with pytest.raises(ValidationError, match=message):
        cfg(layout, {"source": "fixed", "value": "x"})
