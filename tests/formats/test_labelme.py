"""The ``labelme`` format: one JSON per image, filled as LabelMe draws (PIL's ImageDraw), through convert."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import drawn
from conftest import ramp, save
from medseg.config import ConvertConfig
from medseg.formats.convert import convert_dataset
from medseg.io.errors import DataError
from medseg.io.images import read_png

H, W = 40, 50
CLASSES = ["background", "nodule", "cyst"]
L_SHAPE = [[5, 5], [30, 5], [30, 12], [15, 12], [15, 30], [5, 30]]


def pil_fill(draw) -> np.ndarray:
    """What LabelMe's own ``shape_to_mask`` does: PIL draws the shape with outline and fill."""
    im = Image.new("L", (W, H), 0)
    draw(ImageDraw.Draw(im))
    return np.asarray(im) > 0


def shape(label: str, points, kind: str = "polygon") -> dict:
    return {"label": label, "points": points, "shape_type": kind, "group_id": None, "flags": {}}


def labelme_json(raw: Path, stem: str, shapes: list[dict], image_path: str | None = None, embed: bool = False,
                 write_image: bool = True, size=(W, H)) -> Path:
    image_path = image_path or f"../images/{stem}.png"
    path = raw / "annotations" / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = ramp(H, W, 1)
    if write_image:
        save(Path(str(path.parent / image_path.replace("\\", "/"))), picture)
    data = None
    if embed:
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG")
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
    path.write_text(json.dumps({"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path,
                                "imageData": data, "imageWidth": size[0], "imageHeight": size[1]}))
    return path


def cfg(**annotation) -> ConvertConfig:
    return ConvertConfig(annotation={"format": "labelme", "folder": "annotations", **annotation}, classes=CLASSES,
                         image_class={"source": "fixed", "value": "scan"})


def convert(tmp_path: Path, out: str = "out", **annotation) -> tuple[dict, dict[str, np.ndarray]]:
    report = convert_dataset(tmp_path / "raw", tmp_path / out, cfg(**annotation), workers=1)
    return report, {p.stem: read_png(p) for p in sorted((tmp_path / out / "labels").glob("*.png"))}


def test_polygon_rectangle_and_circle_fill_as_labelme_draws_them(tmp_path):
    triangle = [[32, 4], [47, 20], [36, 36]]
    labelme_json(tmp_path / "raw", "a", [shape("nodule", L_SHAPE), shape("cyst", triangle)])
    labelme_json(tmp_path / "raw", "b", [shape("nodule", [[3, 4], [12, 9]], "rectangle"),
                                         shape("cyst", [[30, 20], [36, 20]], "circle")])
    report, labels = convert(tmp_path)
    assert ((labels["a"] == 1) == pil_fill(lambda d: d.polygon([tuple(p) for p in L_SHAPE], outline=1, fill=1))).all()
    assert drawn.iou(labels["a"] == 2, pil_fill(lambda d: d.polygon([tuple(p) for p in triangle], outline=1,
                                                                    fill=1))) > 0.95
    rectangle = np.zeros((H, W), bool)
    rectangle[4:10, 3:13] = True          # both corners included, as LabelMe draws it
    assert ((labels["b"] == 1) == rectangle).all()
    circle = pil_fill(lambda d: d.ellipse([24, 14, 36, 26], outline=1, fill=1))
    assert drawn.iou(labels["b"] == 2, circle) > 0.9
    assert report["instances"] == 4 and report["format"] == "labelme"
    manifest = (tmp_path / "out" / "manifest.csv").read_text()
    assert "images/a.png" in manifest and "annotations/a.json" in manifest


def test_embedded_image_data_is_read_when_the_file_is_missing(tmp_path):
    labelme_json(tmp_path / "raw", "a", [shape("nodule", L_SHAPE)], embed=True, write_image=False)
    _, labels = convert(tmp_path)
    assert (read_png(tmp_path / "out" / "images" / "a.png") == ramp(H, W, 1)).all()
    assert labels["a"].any()


def test_windows_separators_in_image_path(tmp_path):
    labelme_json(tmp_path / "raw", "a", [shape("nodule", L_SHAPE)], image_path="..\\images\\a.png")
    report, _ = convert(tmp_path)
    assert report["count"] == 1


def test_lines_and_points_are_an_error_unless_params_say_ignore(tmp_path):
    labelme_json(tmp_path / "raw", "a", [shape("nodule", L_SHAPE), shape("nodule", [[1, 1], [9, 9]], "line"),
                                         shape("cyst", [[20, 20]], "point")])
    with pytest.raises(DataError, match=r"a.json: shape 2 \('nodule', line\): a line encloses no pixels"):
        convert(tmp_path)
    report, labels = convert(tmp_path, "out2", unfillable="ignore")
    assert set(np.unique(labels["a"])) == {0, 1}
    assert "1 line shape(s) left out (annotation.unfillable: ignore)" in report["notes"]


def test_labels_map_names_and_overlap_follows_the_class_order(tmp_path):
    big, small = [[5, 5], [40, 5], [40, 35], [5, 35]], [[10, 10], [20, 10], [20, 20], [10, 20]]
    labelme_json(tmp_path / "raw", "a", [shape("Cyst", small), shape("Nodule", big)])
    _, labels = convert(tmp_path, labels={"Nodule": "nodule", "Cyst": "cyst"})
    assert (labels["a"][10:21, 10:21] == 2).all() and labels["a"][30, 30] == 1
    _, labels = convert(tmp_path, "out2", labels={"Nodule": "nodule", "Cyst": "cyst"}, overlap="earlier")
    assert (labels["a"][10:21, 10:21] == 1).all()


def test_an_image_no_json_names_is_an_error_or_background(tmp_path):
    labelme_json(tmp_path / "raw", "a", [shape("nodule", L_SHAPE)])
    save(tmp_path / "raw" / "images" / "b.png", ramp(H, W, 1))
    with pytest.raises(DataError, match=r"images/b.png: no LabelMe JSON names this image"):
        convert(tmp_path, images="images")
    report, labels = convert(tmp_path, "out2", images="images", unannotated="background")
    assert report["unannotated_images"] == ["b"] and not labels["b"].any()
    assert convert(tmp_path, "out3")[0]["count"] == 1  # without images: the JSONs are the dataset


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda raw: labelme_json(raw, "a", [shape("lesion", L_SHAPE)]),
         r"a.json: shape 1 \('lesion', polygon\): unknown category 'lesion'"),
        (lambda raw: labelme_json(raw, "a", [shape("nodule", [[5, 5], [25, 25], [25, 5], [5, 25]])]),
         r"a.json: shape 1 \('nodule', polygon\): self-intersecting polygon"),
        (lambda raw: labelme_json(raw, "a", [shape("nodule", [[5, 5], [55, 5], [5, 30]])]),
         r"a.json: shape 1 \('nodule', polygon\): polygon point \(x=55, y=5\) is outside the 50x40 image"),
        (lambda raw: labelme_json(raw, "a", [shape("nodule", L_SHAPE)], write_image=False),
         r"a.json: imagePath '../images/a.png': no such file and no imageData embedded"),
        (lambda raw: labelme_json(raw, "a", [shape("nodule", L_SHAPE)], image_path="../../elsewhere/a.png",
                                  write_image=False), r"a.json: imagePath '../../elsewhere/a.png' points outside"),
        (lambda raw: labelme_json(raw, "a", [shape("nodule", L_SHAPE)], size=(W, H + 2)),
         r"a.json: image a.png is declared 50x42 here but the file is 50x40"),
        (lambda raw: labelme_json(raw, "a", []), r"a.json: no shape to fill"),
        (lambda raw: labelme_json(raw, "a", [shape("nodule", [[1, 1], [5, 5], [9, 1]], "cuboid")]),
         r"shape type 'cuboid' is not read"),
        (lambda raw: labelme_json(raw, "a", [{**shape("nodule", [[1, 1], [5, 5]], "mask"), "mask": "AAAA"}]),
         r"shape 1 \('nodule', mask\): malformed mask: not a base64 PNG"),
        (lambda raw: labelme_json(raw, "a", [shape("nodule", L_SHAPE)]).write_text('{"shapes": [}'),
         r"a.json: JSON does not parse: Expecting value at line 1, column 13"),
    ],
)
def test_bad_files_name_the_json_and_the_problem(tmp_path, build, message):
    build(tmp_path / "raw")
    with pytest.raises(DataError, match=message):
        convert(tmp_path)
    assert not (tmp_path / "out" / "labels" / "a.png").exists()
