"""The ``coco`` format: polygons and RLE through convert, against maps computed without our code."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

import drawn
from conftest import ramp, save
from medseg.config import ConvertConfig
from medseg.formats.convert import convert_dataset
from medseg.io.errors import DataError
from medseg.io.images import read_png

H, W = 40, 50
CLASSES = ["background", "nodule", "cyst"]
L_SHAPE = [5, 5, 30, 5, 30, 12, 15, 12, 15, 30, 5, 30]  # rectilinear, so pixel centres decide exactly
TRIANGLE = [32, 4, 47, 20, 36, 36]


def centres_inside(flat: list[float]) -> np.ndarray:
    return drawn.centres_inside(flat, (H, W))


def disk(cx=25, cy=20, r=9) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    cv2.circle(m, (cx, cy), r, 1, cv2.FILLED)
    return m


def coco_file(raw: Path, annotations: list[dict], images=None, categories=None) -> Path:
    images = images or [{"id": 1, "file_name": "a.png", "width": W, "height": H}]
    for im in images:
        if not (raw / "images" / im["file_name"]).exists():
            save(raw / "images" / im["file_name"], ramp(H, W, 1))
    categories = categories or [{"id": 1, "name": "nodule"}, {"id": 2, "name": "cyst"}]
    for k, a in enumerate(annotations, start=1):
        a.setdefault("id", k)
        a.setdefault("image_id", 1)
        a.setdefault("iscrowd", 0)
    path = raw / "annotations" / "instances.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def coco_cfg(**annotation) -> ConvertConfig:
    return ConvertConfig(annotation={"format": "coco", "file": "annotations/instances.json", **annotation},
                         classes=CLASSES, image_class={"source": "fixed", "value": "scan"})


def convert(tmp_path: Path, out: str = "out", **annotation) -> tuple[dict, dict[str, np.ndarray]]:
    out = tmp_path / out
    report = convert_dataset(tmp_path / "raw", out, coco_cfg(**annotation), workers=1)
    return report, {p.stem: read_png(p) for p in sorted((out / "labels").glob("*.png"))}


def test_polygons_fill_as_the_continuous_plane_says_and_as_pycocotools_does(tmp_path):
    path = coco_file(tmp_path / "raw", [{"category_id": 1, "segmentation": [L_SHAPE]},
                                        {"category_id": 2, "segmentation": [TRIANGLE]}])
    report, labels = convert(tmp_path)
    label = labels["a"]
    assert ((label == 1) == centres_inside(L_SHAPE)).all()
    coco = COCO(str(path))  # pycocotools' own reading of the file
    assert ((label == 2) == coco.annToMask(coco.loadAnns([2])[0]).astype(bool)).all()
    assert report["format"] == "coco" and report["instances"] == 2 and report["unannotated_images"] == []
    assert report["class_pixels"]["nodule"] == int(centres_inside(L_SHAPE).sum())


def test_rle_compressed_and_uncompressed_and_crowd(tmp_path):
    plain, packed = disk(15, 20, 8), disk(36, 20, 8)
    compressed = coco_mask.encode(np.asfortranarray(packed))
    by_columns = drawn.runs(plain.ravel(order="F"))  # COCO counts run down the columns
    coco_file(tmp_path / "raw", [
        {"category_id": 1, "iscrowd": 1, "segmentation": {"size": [H, W], "counts": by_columns}},
        {"category_id": 2, "segmentation": {"size": [H, W], "counts": compressed["counts"].decode("ascii")}}])
    _, labels = convert(tmp_path)
    assert ((labels["a"] == 1) == plain.astype(bool)).all()
    assert ((labels["a"] == 2) == packed.astype(bool)).all()
    out = tmp_path / "out_skip"
    convert_dataset(tmp_path / "raw", out, coco_cfg(crowd="skip"), workers=1)
    assert set(np.unique(read_png(out / "labels" / "a.png"))) == {0, 2}


@pytest.mark.parametrize(("overlap", "inside"), [("later", 2), ("earlier", 1)])
def test_overlapping_instances_merge_by_the_class_order(tmp_path, overlap, inside):
    square = [10, 10, 30, 10, 30, 30, 10, 30]
    shifted = [20, 20, 40, 20, 40, 38, 20, 38]
    # The cyst (later class) is listed first: the order in the file does not decide, the classes do.
    coco_file(tmp_path / "raw", [{"category_id": 2, "segmentation": [shifted]},
                                 {"category_id": 1, "segmentation": [square]}])
    _, labels = convert(tmp_path, overlap=overlap)
    both = centres_inside(square) & centres_inside(shifted)
    assert (labels["a"][both] == inside).all()
    assert (labels["a"][centres_inside(square) & ~both] == 1).all()
    assert (labels["a"][centres_inside(shifted) & ~both] == 2).all()


def test_categories_map_to_classes_by_name_in_params(tmp_path):
    coco_file(tmp_path / "raw", [{"category_id": 7, "segmentation": [L_SHAPE]}],
              categories=[{"id": 7, "name": "Thyroid nodule"}])
    _, labels = convert(tmp_path, labels={"Thyroid nodule": "nodule"})
    assert ((labels["a"] == 1) == centres_inside(L_SHAPE)).all()


def test_an_image_without_annotations_is_background_only_when_params_say_so(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "width": W, "height": H},
              {"id": 2, "file_name": "sub/b.png", "width": W, "height": H}]
    coco_file(tmp_path / "raw", [{"category_id": 1, "segmentation": [L_SHAPE]}], images=images)
    with pytest.raises(DataError, match=r"instances.json: image 2 'sub/b.png': no annotation"):
        convert(tmp_path)
    out = tmp_path / "out_bg"
    report = convert_dataset(tmp_path / "raw", out, coco_cfg(unannotated="background"), workers=1)
    assert report["count"] == 2 and report["unannotated_images"] == ["b"]
    assert not read_png(out / "labels" / "b.png").any()


BOWTIE = [5, 5, 25, 25, 25, 5, 5, 25]


@pytest.mark.parametrize(
    ("annotations", "images", "message"),
    [
        ([{"category_id": 1, "segmentation": [BOWTIE]}], None,
         r"annotation 1 \(image 'a.png', category 'nodule'\), polygon 1: self-intersecting polygon: "
         r"edge \(5, 5\)-\(25, 25\) crosses edge \(25, 5\)-\(5, 25\)"),
        ([{"category_id": 1, "segmentation": [[5, 5, 60, 5, 60, 20]]}], None,
         r"polygon point \(x=60, y=5\) is outside the 50x40 image"),
        ([{"category_id": 1, "segmentation": [[5, 5, 20, 5, 5, 5]]}], None, r"polygon has 2 distinct point"),
        ([{"category_id": 3, "segmentation": [L_SHAPE]}], None, r"category_id 3 is not in 'categories'"),
        ([{"category_id": 1, "image_id": 9, "segmentation": [L_SHAPE]}], None,
         r"annotation 1: image_id 9 is not in 'images' \(an annotation for a missing image\)"),
        ([{"category_id": 1, "segmentation": [L_SHAPE]}], [{"id": 1, "file_name": "a.png", "width": W + 10,
                                                           "height": H}],
         r"image a.png is declared 60x40 here but the file is 50x40"),
        ([{"category_id": 1, "segmentation": {"size": [H, W], "counts": [5, 10]}}], None,
         r"malformed RLE: counts add up to 15 pixels, not the image's 2000"),
        ([{"category_id": 1, "segmentation": {"size": [H, W], "counts": "not an rle"}}], None,
         r"malformed RLE \(Invalid RLE mask representation\)"),
        ([{"category_id": 1, "segmentation": {"size": [H + 1, W], "counts": [H * W]}}], None,
         r"RLE size \[41, 50\] is not the image's \[height, width\] \[40, 50\]"),
        ([{"category_id": 1, "bbox": [1, 1, 5, 5], "segmentation": []}], None, r"no segmentation"),
    ],
)
def test_bad_annotations_name_the_file_and_the_problem(tmp_path, annotations, images, message):
    coco_file(tmp_path / "raw", annotations, images=images)
    with pytest.raises(DataError, match=r"instances.json: .*" + message):
        convert(tmp_path)
    assert not (tmp_path / "out" / "labels" / "a.png").exists()


def test_unknown_category_and_missing_image_file(tmp_path):
    raw = tmp_path / "raw"
    coco_file(raw, [{"category_id": 1, "segmentation": [L_SHAPE]}],
              categories=[{"id": 1, "name": "tumour"}])
    with pytest.raises(DataError, match=r"category 'tumour'\): unknown category 'tumour'"):
        convert(tmp_path)
    (raw / "images" / "a.png").unlink()
    with pytest.raises(DataError, match=r"image 1 'a.png': no file images/a.png \(an annotation for a missing image"):
        convert(tmp_path, "out2", labels={"tumour": "nodule"})


def test_a_json_that_does_not_parse_is_named_with_its_line(tmp_path):
    path = coco_file(tmp_path / "raw", [{"category_id": 1, "segmentation": [L_SHAPE]}])
    path.write_text(path.read_text()[:-2] + "\n,")
    with pytest.raises(DataError, match=r"instances.json: JSON does not parse: .* at line 2, column 2"):
        convert(tmp_path)


def test_skip_keeps_the_good_images_and_lists_the_bad(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "width": W, "height": H},
              {"id": 2, "file_name": "b.png", "width": W, "height": H}]
    coco_file(tmp_path / "raw", [{"category_id": 1, "segmentation": [L_SHAPE]},
                                 {"category_id": 1, "image_id": 2, "segmentation": [BOWTIE]}], images=images)
    out = tmp_path / "out"
    report = convert_dataset(tmp_path / "raw", out, coco_cfg().model_copy(update={"on_error": "skip"}), workers=1)
    assert report["count"] == 1 and "self-intersecting" in report["skipped"][0]["problem"]
    assert not (out / "labels" / "b.png").exists()
