"""Bad annotation files of the tool formats (outline, coco, labelme, cvat) through the stage scripts (issue 20).

As in ``test_bad_inputs``: a local folder is fetched, then ``convert`` runs
as a user runs it and must exit 1 with a one-line message naming the file
and the problem, leaving no output and no temporary sibling behind.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_bad_inputs import CONVERTED, assert_convert_refuses, profile, stage, write_params

from conftest import ramp, save

H, W = 24, 32
SQUARE = [4, 4, 20, 4, 20, 16, 4, 16]
BOWTIE = [4, 4, 20, 16, 20, 4, 4, 16]


def coco(src: Path, annotations: list[dict], width: int = W, extra_images: tuple = ()) -> dict:
    save(src / "images" / "a.png", ramp(H, W, 1))
    images = [{"id": 1, "file_name": "a.png", "width": width, "height": H}, *extra_images]
    for k, a in enumerate(annotations, start=1):
        a.update(id=k, iscrowd=0, **({} if "image_id" in a else {"image_id": 1}))
    (src / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                    "categories": [{"id": 1, "name": "lesion"}]}))
    return {"annotation": {"format": "coco", "file": "instances.json"}, "layout": None}


def labelme(src: Path, text: str) -> dict:
    save(src / "a.png", ramp(H, W, 1))
    (src / "a.json").write_text(text)
    return {"annotation": {"format": "labelme"}, "layout": None}


def cvat(src: Path, shapes: str) -> dict:
    save(src / "images" / "a.png", ramp(H, W, 1))
    (src / "annotations.xml").write_text(f'<annotations><version>1.1</version><image id="0" name="a.png" '
                                         f'width="{W}" height="{H}">{shapes}</image></annotations>')
    return {"annotation": {"format": "cvat"}, "layout": None}


def open_outline(src: Path) -> dict:
    save(src / "images" / "a.png", ramp(H, W, 1))
    ring = np.zeros((H, W), np.uint8)
    cv2.ellipse(ring, (16, 12), (10, 7), 0, 30, 330, 255, 1)
    save(src / "masks" / "a_mask.png", ring)
    return {"annotation": {"format": "outline", "foreground": "lesion"}}


def polygon(flat: list[int]) -> dict:
    return {"category_id": 1, "segmentation": [flat]}


CASES = [
    pytest.param(lambda s: coco(s, [polygon(BOWTIE)]),
                 ("instances.json", "annotation 1 (image 'a.png', category 'lesion'), polygon 1: self-intersecting "
                  "polygon"), id="self-intersecting-polygon"),
    pytest.param(lambda s: coco(s, [polygon([4, 4, 40, 4, 4, 16])]),
                 ("instances.json", "polygon point (x=40, y=4) is outside the 32x24 image"), id="polygon-outside"),
    pytest.param(lambda s: labelme(s, json.dumps({"imagePath": "a.png", "shapes": [
        {"label": "tumour", "points": [[4, 4], [20, 4], [20, 16]], "shape_type": "polygon"}]})),
        ("a.json", "shape 1 ('tumour', polygon): unknown category 'tumour'"), id="unknown-category"),
    pytest.param(lambda s: coco(s, [polygon(SQUARE), {**polygon(SQUARE), "image_id": 5}]),
                 ("instances.json", "annotation 2: image_id 5 is not in 'images' (an annotation for a missing "
                  "image)"), id="annotation-for-missing-image"),
    pytest.param(lambda s: coco(s, [polygon(SQUARE)], extra_images=(
        {"id": 2, "file_name": "gone.png", "width": W, "height": H},)),
        ("instances.json", "image 2 'gone.png': no file images/gone.png (an annotation for a missing image)"),
        id="listed-image-file-missing"),
    pytest.param(lambda s: cvat(s, ""), ("annotations.xml", "image 'a.png': no annotation"),
                 id="image-with-no-annotation"),
    pytest.param(lambda s: coco(s, [{"category_id": 1, "segmentation": {"size": [H, W], "counts": "#!bad"}}]),
                 ("instances.json", "RLE: malformed RLE (Invalid RLE mask representation)"), id="malformed-coco-rle"),
    pytest.param(lambda s: cvat(s, '<mask label="lesion" rle="1, 2" left="0" top="0" width="2" height="2"/>'),
                 ("annotations.xml", "malformed RLE: runs add up to 3 pixels, not the box's 2x2 = 4"),
                 id="malformed-cvat-rle"),
    pytest.param(lambda s: coco(s, [polygon(SQUARE)], width=W + 8),
                 ("instances.json", "image a.png is declared 40x24 here but the file is 32x24"),
                 id="coco-size-disagrees"),
    pytest.param(open_outline, ("masks/a_mask.png", "open outline", "its ends are at"), id="open-outline"),
    pytest.param(lambda s: cvat(s, "<polygon"),
                 ("annotations.xml", "XML does not parse"), id="xml-does-not-parse"),
    pytest.param(lambda s: labelme(s, '{"imagePath": "a.png", "shapes": ['),
                 ("a.json", "JSON does not parse"), id="json-does-not-parse"),
]


@pytest.mark.parametrize(("build", "expected"), CASES)
def test_convert_refuses_bad_annotations(tmp_path: Path, build: Callable[[Path], dict],
                                         expected: tuple[str, ...]) -> None:
    assert_convert_refuses(tmp_path, build, expected)


def test_a_good_coco_file_converts_through_the_stage(tmp_path: Path) -> None:
    src, work = tmp_path / "src", tmp_path / "work"
    write_params(work, profile({"kind": "local", "path": str(src)}, **coco(src, [polygon(SQUARE)])))
    for name in ("fetch", "convert"):
        proc = stage(work, name)
        assert proc.returncode == 0, proc.stderr
    report = json.loads((work / CONVERTED / "report.json").read_text())
    assert report["format"] == "coco" and report["class_pixels"]["lesion"] == 16 * 12
