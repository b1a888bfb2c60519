"""The convert stage's library on hand-built AUL trees, folder layouts and the shared samples."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, ramp, save, shared_dataset
from medseg.config import ConvertConfig, load_params
from medseg.formats.convert import convert_dataset
from medseg.io.errors import DataError
from medseg.io.images import read_png

SQUARE = [[2, 2], [29, 2], [29, 21], [2, 21]]
SMALL = [[10, 8], [17, 8], [17, 14], [10, 14]]


def aul_cfg(**kw) -> ConvertConfig:
    return ConvertConfig(annotation={"format": "aul_polygons", **kw},
                         classes=["background", "liver", "benign", "malignant"],
                         channels=1, image_class={"source": "annotation"})


def write_aul(root: Path, folder: str, number: int, outline=SQUARE, liver=SQUARE, mass=SMALL) -> None:
    save(root / folder / "image" / f"{number}.jpg", ramp(24, 32, 3), quality=95)
    for kind, pts in (("outline", outline), ("liver", liver), ("mass", mass)):
        if pts is not None:
            f = root / folder / "segmentation" / kind / f"{number}.json"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(pts))


def labels(out: Path) -> dict[str, np.ndarray]:
    m = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    return {r.id: read_png(out / r.label) for r in m.itertuples()}


def test_aul_layout_classes_and_quirks(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_aul(raw, "Benign", 1)
    write_aul(raw, "Malignant", 2)
    write_aul(raw, "Normal", 3, mass=None)
    write_aul(raw, "Benign", 229, liver=None)          # outline file holds the liver
    write_aul(raw, "Malignant", 374, liver=None)       # no liver polygon at all
    aul = load_params(REPO / "params.yaml").dataset("aul").convert  # the quirks AUL's profile lists
    report = convert_dataset(raw, out, aul, workers=1)
    lab = labels(out)
    assert set(np.unique(lab["Benign_1"])) == {0, 1, 2}
    assert set(np.unique(lab["Malignant_2"])) == {0, 1, 3}
    assert set(np.unique(lab["Normal_3"])) == {0, 1}
    assert set(np.unique(lab["Benign_229"])) == {0, 1, 2}
    assert set(np.unique(lab["Malignant_374"])) == {0, 3}
    assert (lab["Benign_1"][8:15, 10:18] == 2).all()    # mass drawn over the liver
    manifest = pd.read_csv(out / "manifest.csv")
    assert dict(zip(manifest["id"], manifest["image_class"], strict=True)) == {
        "Benign_1": "benign", "Benign_229": "benign", "Malignant_2": "malignant",
        "Malignant_374": "malignant", "Normal_3": "normal"}
    assert manifest["group"].nunique() == 5             # one patient per image
    assert len(report["quirks"]) == 2 and report["skipped"] == []
    assert report["class_pixels"]["benign"] == int((lab["Benign_1"] == 2).sum() + (lab["Benign_229"] == 2).sum())


def test_aul_quirks_are_the_datasets_not_the_formats(tmp_path):
    raw = tmp_path / "raw"
    write_aul(raw, "Benign", 229, liver=None)
    with pytest.raises(DataError, match="229.jpg: no liver polygon"):
        convert_dataset(raw, tmp_path / "failed", aul_cfg(), workers=1)
    report = convert_dataset(raw, tmp_path / "out", aul_cfg(outline_is_liver=["229"]), workers=1)
    assert report["quirks"] == ["Benign_229: liver taken from the outline file"]


def test_aul_nested_extraction_folder(tmp_path):
    raw = tmp_path / "raw"
    write_aul(raw / "Benign", "Benign", 7)   # Benign.zip extracted into raw/Benign/Benign/...
    report = convert_dataset(raw, tmp_path / "out", aul_cfg(), workers=1)
    assert report["count"] == 1


def test_aul_missing_liver_is_an_error_unless_known(tmp_path):
    raw = tmp_path / "raw"
    write_aul(raw, "Benign", 5, liver=None)
    with pytest.raises(DataError, match="no liver polygon") as err:
        convert_dataset(raw, tmp_path / "out", aul_cfg(), workers=1)
    assert "5.jpg" in str(err.value)


def test_aul_mass_class_without_mass_is_an_error(tmp_path):
    raw = tmp_path / "raw"
    write_aul(raw, "Malignant", 9, mass=None)
    with pytest.raises(DataError, match="no mass polygon"):
        convert_dataset(raw, tmp_path / "out", aul_cfg(), workers=1)


def folder_cfg(**kw) -> ConvertConfig:
    base = dict(annotation={"format": "grey", "values": {"background": 0, "lesion": 255}},
                classes=["background", "lesion"], channels=1,
                layout={"images": "images", "masks": "masks", "mask_name": "{stem}_mask"})
    base.update(kw)
    return ConvertConfig(**base)


def write_pair(raw: Path, stem: str, ext="png", mask_shape=(24, 32)) -> None:
    save(raw / "images" / f"{stem}.{ext}", ramp(24, 32, 1))
    mask = np.zeros(mask_shape, np.uint8)
    mask[5:10, 5:12] = 255
    save(raw / "masks" / f"{stem}_mask.png", mask)


def test_folder_layout_names_with_spaces_and_brackets(tmp_path):
    raw = tmp_path / "raw"
    write_pair(raw, "case (1)")
    write_pair(raw, "case (2)")
    report = convert_dataset(raw, tmp_path / "out", folder_cfg(), workers=2)
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert list(manifest["id"]) == ["case_1", "case_2"]
    assert list(manifest["px_lesion"]) == [35, 35]
    assert manifest["source_image"].tolist() == ["images/case (1).png", "images/case (2).png"]
    assert report["image_classes"] == {"lesion": 2}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda raw: write_pair(raw, "b", mask_shape=(20, 32)), "mask is 32x20 but image b.png is 32x24"),
        (lambda raw: save(raw / "images" / "b.png", ramp(24, 32, 1)), "no mask named 'b_mask'"),
        (lambda raw: (write_pair(raw, "b"), save(raw / "images" / "b.jpg", ramp(24, 32, 1))),
         "two image files share one name"),
        (lambda raw: (write_pair(raw, "b"), save(raw / "masks" / "b_mask.jpg", ramp(24, 32, 1))),
         "two mask candidates"),
    ],
)
def test_folder_problems_stop_or_are_skipped_and_listed(tmp_path, setup, message):
    raw = tmp_path / "raw"
    write_pair(raw, "a")
    setup(raw)
    with pytest.raises(DataError, match=message):
        convert_dataset(raw, tmp_path / "out", folder_cfg(), workers=1)
    report = convert_dataset(raw, tmp_path / "out2", folder_cfg(on_error="skip"), workers=1)
    assert report["count"] == 1
    assert len(report["skipped"]) == 1 and message.split("'")[0] in report["skipped"][0]["problem"]
    assert not (tmp_path / "out2" / "images" / "b.png").exists()


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "raw" / "images").mkdir(parents=True)
    (tmp_path / "raw" / "masks").mkdir()
    with pytest.raises(DataError, match="empty dataset"):
        convert_dataset(tmp_path / "raw", tmp_path / "out", folder_cfg(), workers=1)


def test_group_regex_must_match(tmp_path):
    raw = tmp_path / "raw"
    write_pair(raw, "Image_01L")
    write_pair(raw, "other")
    with pytest.raises(DataError, match="does not match group_regex"):
        convert_dataset(raw, tmp_path / "out", folder_cfg(group_regex=r"^Image_(\d+)[LR]$"), workers=1)


# ----------------------------------------------------------------- the shared real samples
def shared_cfg(name: str) -> ConvertConfig:
    return load_params(REPO / "params.yaml").dataset(name).convert


def test_us_liver_mini_colour_masks(tmp_path):
    raw = shared_dataset("us-liver-mini")
    report = convert_dataset(raw, tmp_path / "out", shared_cfg("us-liver-mini"))
    lab = labels(tmp_path / "out")
    assert report["count"] == 36
    assert set(np.unique(lab["10009"])) == {0, 1}       # benign only
    assert set(np.unique(lab["10275"])) == {0, 2}       # malignant only


def test_busi_jpeg_masks_become_two_classes(tmp_path):
    raw = shared_dataset("busi-malignant-mini")
    report = convert_dataset(raw, tmp_path / "out", shared_cfg("busi-malignant-mini"))
    assert report["count"] == 42 and report["snapped_pixels"] > 0
    values = set()
    for lab in labels(tmp_path / "out").values():
        values |= set(np.unique(lab).tolist())
    assert values == {0, 1}


def test_chase_groups_pair_left_and_right_eyes(tmp_path):
    raw = shared_dataset("chase-retina-mini")
    report = convert_dataset(raw, tmp_path / "out", shared_cfg("chase-retina-mini"))
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str)
    assert report["count"] == 28 and report["groups"] == 14
    eyes = manifest.groupby("group")["id"].apply(lambda ids: "".join(sorted(i[-1] for i in ids)))
    assert (eyes == "LR").all()


def test_palette_masks_through_the_stage(tmp_path):
    from PIL import Image

    raw = tmp_path / "raw"
    save(raw / "images" / "a.png", ramp(24, 32, 1))
    idx = np.zeros((24, 32), np.uint8)
    idx[3:9, 4:10] = 5
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0] * 5 + [200, 10, 10] + [0, 0, 0] * 250)
    (raw / "masks").mkdir()
    im.save(raw / "masks" / "a_mask.png")
    cfg = folder_cfg(annotation={"format": "palette", "indices": {"background": 0, "lesion": 5}})
    report = convert_dataset(raw, tmp_path / "out", cfg, workers=1)
    assert report["class_pixels"]["lesion"] == 36
    # The same file read as colours needs the colour, not the index.
    cfg = folder_cfg(annotation={"format": "rgb", "colors": {"background": [0, 0, 0], "lesion": [200, 10, 10]}})
    assert convert_dataset(raw, tmp_path / "out2", cfg, workers=1)["class_pixels"]["lesion"] == 36


def test_truncated_image_stops_or_is_skipped(tmp_path):
    raw = tmp_path / "raw"
    write_pair(raw, "a")
    write_pair(raw, "b", ext="jpg")
    broken = raw / "images" / "b.jpg"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        convert_dataset(raw, tmp_path / "out", folder_cfg(), workers=2)
    assert "b.jpg" in str(err.value)
    report = convert_dataset(raw, tmp_path / "out2", folder_cfg(on_error="skip"), workers=2)
    assert report["count"] == 1 and report["skipped"][0]["file"].endswith("b.jpg")


def test_outliers_of_a_lossy_mask_in_the_report(tmp_path):
    raw = tmp_path / "raw"
    write_pair(raw, "a")
    mask = np.zeros((24, 32), np.uint8)
    mask[5:10, 5:12] = 255
    mask[0, 0] = 90   # beyond tolerance 40 of 0 and 255: 1 of 768 pixels
    save(raw / "masks" / "b_mask.png", mask)
    save(raw / "images" / "b.png", ramp(24, 32, 1))
    with pytest.raises(DataError, match="b_mask.png: 1 mask value"):
        convert_dataset(raw, tmp_path / "out", folder_cfg(), workers=1)
    grey = {"format": "grey", "values": {"background": 0, "lesion": 255}, "tolerance": 40,
            "max_outlier_fraction": 0.002}
    report = convert_dataset(raw, tmp_path / "out2", folder_cfg(annotation=grey), workers=1)
    assert report["outlier_pixels"] == 1 and report["outlier_files"] == {"masks/b_mask.png": 1}
    assert labels(tmp_path / "out2")["b"][0, 0] == 0
