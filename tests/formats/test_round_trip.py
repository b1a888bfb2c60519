"""Label map -> regions -> a tool's file -> convert gives the label map back (issue 20's round trip)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import drawn
from conftest import ramp, save
from medseg.config import ConvertConfig
from medseg.formats.coco import write_coco
from medseg.formats.convert import convert_dataset
from medseg.formats.cvat import write_cvat
from medseg.formats.labelme import write_labelme
from medseg.formats.polygons import regions
from medseg.io.images import read_png

CLASSES = ["background", "gland", "nodule"]
FORMATS = {"coco": {"file": "coco.json"}, "cvat": {"file": "cvat.xml"}, "labelme": {"folder": "labelme"}}


def smooth_label(seed: int, h: int = 90, w: int = 120, sigma: float = 5) -> np.ndarray:
    """Blobs of two classes, nodules inside glands (so glands have holes), a small island and a one-pixel line."""
    noise = cv2.GaussianBlur(np.random.default_rng(seed).random((h, w)).astype(np.float32), (0, 0), sigma)
    label = np.zeros((h, w), np.uint8)
    label[noise > np.quantile(noise, 0.55)] = 1
    label[noise > np.quantile(noise, 0.85)] = 2
    label[3:5, 3:5] = 2      # a 2 x 2 island
    label[8:13, 98:117] = 0
    label[10, 100:115] = 1   # a one-pixel line: through its pixels, its outline runs back over itself
    return label


def write(fmt: str, raw: Path, labels: dict[str, np.ndarray], tolerance: float) -> None:
    plane = "indices" if fmt == "labelme" else "continuous"
    images = []
    for name, label in labels.items():
        save(raw / "images" / f"{name}.png", ramp(*label.shape, 1))
        images.append((f"{name}.png", label.shape, regions(label, tolerance, plane)))
    if fmt == "coco":
        write_coco(raw / "coco.json", images, CLASSES)
    elif fmt == "cvat":
        write_cvat(raw / "cvat.xml", images, CLASSES)
    else:
        (raw / "labelme").mkdir()
        for name, shape, found in images:
            write_labelme(raw / "labelme" / f"{Path(name).stem}.json", f"../images/{name}", shape, found, CLASSES)


def round_trip(tmp_path: Path, fmt: str, labels: dict[str, np.ndarray], tolerance: float) -> dict[str, np.ndarray]:
    write(fmt, tmp_path / "raw", labels, tolerance)
    cfg = ConvertConfig(annotation={"format": fmt, **FORMATS[fmt]}, classes=CLASSES)
    convert_dataset(tmp_path / "raw", tmp_path / "out", cfg, workers=1)
    return {name: read_png(tmp_path / "out" / "labels" / f"{name}.png") for name in labels}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_without_simplification_the_label_map_comes_back_exactly(tmp_path, fmt):
    labels = {"a": smooth_label(0), "b": smooth_label(1, 70, 64)}
    back = round_trip(tmp_path, fmt, labels, tolerance=0)
    for name, label in labels.items():
        assert (back[name] == label).all(), (name, int((back[name] != label).sum()))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_simplified_polygons_keep_iou_of_each_class_at_least_0_99(tmp_path, fmt):
    labels = {"a": smooth_label(2, 160, 200, sigma=8)}   # 15 nodules of 20-40 px across
    back = round_trip(tmp_path, fmt, labels, tolerance=0.5)
    for c in (1, 2):
        assert drawn.iou(back["a"] == c, labels["a"] == c) >= 0.99


def test_polygons_where_they_can_masks_where_they_must():
    label = smooth_label(0)
    for plane in ("continuous", "indices"):
        found = regions(label, 0.5, plane)
        polygons = [r for r in found if r.polygon is not None]
        assert {r.class_id for r in polygons} == {1, 2}
        boundary = sum(int(cv2.arcLength(r.polygon.astype(np.float32), True)) for r in polygons)
        assert sum(len(r.polygon) for r in polygons) < boundary / 3   # simplified: not a point per boundary pixel
        masks = {(r.class_id, r.left, r.top) for r in found if r.mask is not None}
        holed = [r for r in found if r.mask is not None and r.class_id == 1 and (r.mask == 0).any()]
        assert holed, plane   # a gland around a nodule: a polygon cannot hold its hole
        # Traced through its pixels (LabelMe), the line's outline runs back over itself; along the pixel edges
        # (COCO, CVAT) it is a rectangle one pixel thin, which simplification flattens: a mask either way.
        assert (1, 100, 10) in masks
