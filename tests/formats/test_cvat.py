"""The ``cvat`` format: CVAT for images 1.1 XML through convert, against maps computed without our code."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import drawn
from conftest import ramp, save
from medseg.config import ConvertConfig
from medseg.formats.convert import convert_dataset
from medseg.io.errors import DataError
from medseg.io.images import read_png

H, W = 40, 50
CLASSES = ["background", "nodule", "cyst"]
L_SHAPE = [5, 5, 30, 5, 30, 12, 15, 12, 15, 30, 5, 30]


def points(flat: list[float]) -> str:
    return ";".join(f"{x},{y}" for x, y in np.reshape(flat, (-1, 2)))


def blob() -> np.ndarray:
    bits = np.zeros((9, 12), np.uint8)
    cv2.circle(bits, (6, 4), 4, 1, cv2.FILLED)
    bits[0, 0] = 1   # so the runs start with an empty run of 0
    return bits


def cvat_rle(bits: np.ndarray) -> str:
    return ", ".join(map(str, drawn.runs(bits.ravel())))  # CVAT runs go row by row


def cvat_xml(raw: Path, images: dict[str, str], sizes: dict[str, tuple[int, int]] | None = None,
             top: str = "<version>1.1</version>") -> Path:
    body = []
    for k, (name, shapes) in enumerate(images.items()):
        w, h = (sizes or {}).get(name, (W, H))
        if not (raw / "images" / name).exists():
            save(raw / "images" / name, ramp(H, W, 1))
        body.append(f'<image id="{k}" name="{name}" width="{w}" height="{h}">{shapes}</image>')
    path = raw / "annotations.xml"
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?>\n<annotations>{top}{"".join(body)}</annotations>')
    return path


def cfg(**annotation) -> ConvertConfig:
    return ConvertConfig(annotation={"format": "cvat", **annotation}, classes=CLASSES,
                         image_class={"source": "fixed", "value": "scan"})


def convert(tmp_path: Path, out: str = "out", **annotation) -> tuple[dict, dict[str, np.ndarray]]:
    report = convert_dataset(tmp_path / "raw", tmp_path / out, cfg(**annotation), workers=1)
    return report, {p.stem: read_png(p) for p in sorted((tmp_path / out / "labels").glob("*.png"))}


def test_polygons_boxes_ellipses_and_masks(tmp_path):
    bits = blob()
    cvat_xml(tmp_path / "raw", {
        "a.png": f'<polygon label="nodule" points="{points(L_SHAPE)}" z_order="0"/>'
                 '<box label="cyst" xtl="34" ytl="6" xbr="45" ybr="20" rotation="0"/>',
        "b.png": f'<mask label="cyst" source="manual" rle="{cvat_rle(bits)}" left="20" top="15" width="12" '
                 'height="9"/>'
                 '<ellipse label="nodule" cx="12" cy="14" rx="8" ry="5" rotation="0"/>'
                 '<box label="nodule" xtl="40" ytl="25" xbr="46" ybr="35" rotation="90"/>'
                 '<tag label="cyst"/>'})
    report, labels = convert(tmp_path)
    assert ((labels["a"] == 1) == drawn.centres_inside(L_SHAPE, (H, W))).all()
    box = np.zeros((H, W), bool)
    box[6:20, 34:45] = True
    assert ((labels["a"] == 2) == box).all()
    placed = np.zeros((H, W), bool)
    placed[15:24, 20:32] = bits.astype(bool)
    assert ((labels["b"] == 2) == placed).all()
    ellipse = np.zeros((H, W), np.uint8)
    cv2.ellipse(ellipse, (12 * 16 - 8, 14 * 16 - 8), (8 * 16, 5 * 16), 0, 0, 360, 1, cv2.FILLED, shift=4)
    assert drawn.iou(labels["b"][:, :25] == 1, ellipse[:, :25] > 0) > 0.9
    turned = np.zeros((H, W), bool)
    turned[27:33, 38:48] = True  # the 6 x 10 box turned a quarter about its centre (43, 30)
    assert ((labels["b"][:, 34:] == 1) == turned[:, 34:]).all()
    assert report["instances"] == 5 and report["format"] == "cvat"


def test_polylines_and_points_are_an_error_unless_ignored(tmp_path):
    cvat_xml(tmp_path / "raw", {"a.png": f'<polygon label="nodule" points="{points(L_SHAPE)}"/>'
                                         '<polyline label="nodule" points="1,1;9,9"/>'})
    with pytest.raises(DataError, match=r"annotations.xml: image 'a.png', polyline 2 \('nodule'\): a polyline "
                                        "encloses no pixels"):
        convert(tmp_path)
    report, labels = convert(tmp_path, "out2", unfillable="ignore")
    assert "1 polyline shape(s) left out (annotation.unfillable: ignore)" in report["notes"]
    assert ((labels["a"] == 1) == drawn.centres_inside(L_SHAPE, (H, W))).all()


def test_an_image_without_shapes_is_an_error_or_background(tmp_path):
    cvat_xml(tmp_path / "raw", {"a.png": f'<polygon label="nodule" points="{points(L_SHAPE)}"/>', "b.png": ""})
    with pytest.raises(DataError, match=r"annotations.xml: image 'b.png': no annotation"):
        convert(tmp_path)
    report, labels = convert(tmp_path, "out2", unannotated="background")
    assert report["unannotated_images"] == ["b"] and not labels["b"].any()


POLY = f'<polygon label="nodule" points="{points(L_SHAPE)}"/>'


@pytest.mark.parametrize(
    ("images", "sizes", "message"),
    [
        ({"a.png": '<polygon label="nodule" points="5,5;25,25;25,5;5,25"/>'}, None,
         r"image 'a.png', polygon 1 \('nodule'\): self-intersecting polygon: edge \(5, 5\)-\(25, 25\) crosses"),
        ({"a.png": '<polygon label="nodule" points="5,5;45,5;45,41"/>'}, None,
         r"polygon point \(x=45, y=41\) is outside the 50x40 image"),
        ({"a.png": POLY.replace("nodule", "tumour")}, None, r"unknown category 'tumour'"),
        ({"a.png": POLY}, {"a.png": (W, H + 10)}, r"image a.png is declared 50x50 here but the file is 50x40"),
        ({"a.png": '<mask label="cyst" rle="3, 4, 5" left="1" top="1" width="4" height="4"/>'}, None,
         r"mask 1 \('cyst'\): malformed RLE: runs add up to 12 pixels, not the box's 4x4 = 16"),
        ({"a.png": '<mask label="cyst" rle="3, x" left="1" top="1" width="4" height="4"/>'}, None,
         r"malformed RLE: '3, x' is not comma-separated run lengths"),
        ({"a.png": '<mask label="cyst" rle="0, 16" left="40" top="1" width="16" height="1"/>'}, None,
         r"mask box left=40, top=1, 16x1 is outside the 50x40 image"),
        ({"a.png": '<cuboid label="cyst"/>'}, None, r"<cuboid> is not read"),
    ],
)
def test_bad_shapes_name_the_xml_the_image_and_the_problem(tmp_path, images, sizes, message):
    cvat_xml(tmp_path / "raw", images, sizes)
    with pytest.raises(DataError, match=r"annotations.xml: .*" + message):
        convert(tmp_path)
    assert not (tmp_path / "out" / "labels" / "a.png").exists()


def test_an_image_the_xml_names_but_the_folder_lacks(tmp_path):
    cvat_xml(tmp_path / "raw", {"a.png": POLY})
    (tmp_path / "raw" / "images" / "a.png").unlink()
    with pytest.raises(DataError, match=r"image 'a.png': no file images/a.png \(an annotation for a missing image"):
        convert(tmp_path)


def test_xml_that_does_not_parse_and_video_exports_are_refused(tmp_path):
    path = cvat_xml(tmp_path / "raw", {"a.png": POLY})
    path.write_text(path.read_text().replace("</annotations>", "</annotation>"))
    with pytest.raises(DataError, match=r"annotations.xml: XML does not parse: mismatched tag: line 2"):
        convert(tmp_path)
    cvat_xml(tmp_path / "raw", {"a.png": POLY}, top='<track id="0" label="nodule"></track>')
    with pytest.raises(DataError, match=r"this is CVAT for video"):
        convert(tmp_path)
