"""The ignore label (``convert.ignore``) through convert: params checks, each format, report.json counts."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import ValidationError

from conftest import ramp, save
from medseg.config import ConvertConfig
from medseg.data.converted import IGNORE, ConvertedDataset
from medseg.formats.convert import convert_dataset
from medseg.io.errors import DataError
from medseg.io.images import read_png

LAYOUT = {"images": "images", "masks": "masks", "mask_name": "{stem}_mask"}


def grey_cfg(**kw) -> ConvertConfig:
    base = dict(annotation={"format": "grey", "values": {"background": 0, "lesion": 128}},
                classes=["background", "lesion"], channels=1, layout=LAYOUT, ignore={"value": 255})
    base.update(kw)
    return ConvertConfig(**base)


def voc_mask(h: int = 24, w: int = 32, lesion: int = 128) -> np.ndarray:
    """A lesion block with a 2-pixel 255 border around it, as Pascal VOC draws object boundaries."""
    mask = np.zeros((h, w), np.uint8)
    mask[4:16, 6:20] = 255
    mask[6:14, 8:18] = lesion
    return mask


def test_a_255_border_is_kept_as_ignore_and_counted_in_the_report(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    save(raw / "images" / "a.png", ramp(24, 32, 1))
    save(raw / "images" / "b.png", ramp(24, 32, 1))
    save(raw / "masks" / "a_mask.png", voc_mask())
    save(raw / "masks" / "b_mask.png", np.zeros((24, 32), np.uint8))
    report = convert_dataset(raw, out, grey_cfg(), workers=1)
    # 12 x 14 block minus its 8 x 10 inside: 168 - 80 = 88 border pixels, all in image a.
    assert report["ignore_pixels"] == 88
    assert report["ignore_images"] == {"a": 88}
    assert report["ignore_label"] == IGNORE == 255
    assert report["class_pixels"] == {"background": 2 * 24 * 32 - 88 - 80, "lesion": 80}
    label = read_png(out / "labels" / "a.png")
    assert set(np.unique(label)) == {0, 1, 255}
    assert (label[4:16, 6:20][label[4:16, 6:20] != 1] == 255).all()
    manifest = pd.read_csv(out / "manifest.csv")
    assert manifest["ignore_pixels"].tolist() == [88, 0]
    assert manifest["image_class"].tolist() == ["lesion", "normal"]  # ignore is not a class
    assert ConvertedDataset(out).ignore  # readers accept the 255
    image, read_label = ConvertedDataset(out).read("a")
    assert (read_label == label).all()


def test_without_ignore_a_255_label_is_refused_by_the_reader(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    save(raw / "images" / "a.png", ramp(24, 32, 1))
    save(raw / "masks" / "a_mask.png", voc_mask())
    convert_dataset(raw, out, grey_cfg(), workers=1)
    report = json.loads((out / "report.json").read_text())
    del report["ignore_label"]
    (out / "report.json").write_text(json.dumps(report))
    with pytest.raises(DataError, match=r"label values \[255\]"):
        ConvertedDataset(out).read("a")


def test_lossy_grey_snaps_to_the_ignore_value_too(tmp_path):
    raw = tmp_path / "raw"
    save(raw / "images" / "a.png", ramp(24, 32, 1))
    mask = voc_mask()
    mask[4, 6:20] = 250  # JPEG-like noise on part of the border
    save(raw / "masks" / "a_mask.png", mask)
    report = convert_dataset(raw, tmp_path / "out", grey_cfg(annotation={
        "format": "grey", "values": {"background": 0, "lesion": 128}, "tolerance": 10}), workers=1)
    assert report["ignore_pixels"] == 88 and report["snapped_pixels"] == 14


def test_binary_palette_and_rgb_masks(tmp_path):
    raw = tmp_path / "raw"
    save(raw / "images" / "a.png", ramp(24, 32, 1))
    save(raw / "masks" / "a_mask.png", voc_mask(lesion=1))  # VOC: 0 background, 1 object, 255 border
    binary = grey_cfg(annotation={"format": "binary", "foreground": "lesion", "threshold": 1})
    report = convert_dataset(raw, tmp_path / "bin", binary, workers=1)
    assert (report["ignore_pixels"], report["class_pixels"]["lesion"]) == (88, 80)

    indexed = Image.fromarray(voc_mask(lesion=1), mode="P")
    indexed.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 253 + [224, 224, 192])  # VOC's border colour
    raw2 = tmp_path / "raw2"
    save(raw2 / "images" / "a.png", ramp(24, 32, 1))
    (raw2 / "masks").mkdir()
    indexed.save(raw2 / "masks" / "a_mask.png")
    palette = grey_cfg(annotation={"format": "palette", "indices": {"background": 0, "lesion": 1}})
    report = convert_dataset(raw2, tmp_path / "pal", palette, workers=1)
    assert (report["ignore_pixels"], report["class_pixels"]["lesion"]) == (88, 80)

    rgb = grey_cfg(annotation={"format": "rgb", "colors": {"background": [0, 0, 0], "lesion": [128, 0, 0]}},
                   ignore={"color": [224, 224, 192]})
    report = convert_dataset(raw2, tmp_path / "rgb", rgb, workers=1)
    assert (report["ignore_pixels"], report["class_pixels"]["lesion"]) == (88, 80)


def test_coco_category_named_in_ignore_covers_the_classes(tmp_path):
    raw = tmp_path / "raw"
    save(raw / "images" / "a.png", ramp(24, 32, 1))
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 24}],
            "categories": [{"id": 1, "name": "lesion"}, {"id": 2, "name": "unsure"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[4, 4, 20, 4, 20, 16, 4, 16]]},
                {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [[16, 4, 28, 4, 28, 16, 16, 16]]}]}
    (raw / "coco.json").write_text(json.dumps(coco))
    cfg = ConvertConfig(annotation={"format": "coco", "file": "coco.json"}, classes=["background", "lesion"],
                        ignore={"labels": ["unsure"]})
    report = convert_dataset(raw, tmp_path / "out", cfg, workers=1)
    label = read_png(tmp_path / "out" / "labels" / "a.png")
    # Pixel (x, y) covers [x, x+1): the lesion fills x 4..19, the unsure box x 16..27, both y 4..15.
    assert (label[4:16, 4:16] == 1).all() and (label[4:16, 16:28] == IGNORE).all()
    assert report["ignore_pixels"] == 12 * 12 and report["class_pixels"]["lesion"] == 12 * 12
    with pytest.raises(DataError, match=r"coco.json: convert.ignore.labels: 'difficult' is not a category"):
        convert_dataset(raw, tmp_path / "bad", ConvertConfig(
            annotation={"format": "coco", "file": "coco.json"}, classes=["background", "lesion"],
            ignore={"labels": ["difficult"]}), workers=1)
    assert not (tmp_path / "bad" / "manifest.csv").exists()


@pytest.mark.parametrize(("annotation", "ignore", "message"), [
    ({"format": "grey", "values": {"background": 0, "lesion": 255}}, {"value": 255},
     "ignore.value 255 is the grey value of class 'lesion'"),
    ({"format": "palette", "indices": {"background": 0, "lesion": 3}}, {"value": 3},
     "ignore.value 3 is the palette index of class 'lesion'"),
    ({"format": "rgb", "colors": {"background": [0, 0, 0], "lesion": [9, 9, 9]}}, {"color": [9, 9, 9]},
     r"ignore.color \[9, 9, 9\] is the colour of class 'lesion'"),
    ({"format": "binary", "foreground": "lesion"}, {"value": 0}, "value 0 is the background"),
    ({"format": "grey", "values": {"background": 0, "lesion": 128}}, {"color": [1, 2, 3]},
     "format 'grey' takes ignore.value, not ignore.color"),
    ({"format": "outline", "foreground": "lesion"}, {"value": 255}, "ignore: not supported with format 'outline'"),
    ({"format": "grey", "values": {"background": 0, "lesion": 128}}, {"value": 255, "color": [1, 2, 3]},
     "exactly one of"),
])
def test_bad_ignore_params_name_the_key(annotation, ignore, message):
    with pytest.raises(ValidationError, match=message):
        grey_cfg(annotation=annotation, ignore=ignore)


def test_an_ignored_instance_label_cannot_be_a_class():
    with pytest.raises(ValidationError, match="ignore.labels: 'lesion' is a class name"):
        ConvertConfig(annotation={"format": "cvat"}, classes=["background", "lesion"], ignore={"labels": ["lesion"]})
    with pytest.raises(ValidationError, match="'Nodule' is mapped to class 'lesion'"):
        ConvertConfig(annotation={"format": "cvat", "labels": {"Nodule": "lesion"}}, classes=["background", "lesion"],
                      ignore={"labels": ["Nodule"]})
