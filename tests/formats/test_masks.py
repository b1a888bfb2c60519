"""Mask codecs and polygon rasterisation, checked on hand-made arrays."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.config import BinaryAnnotation, GreyAnnotation, PaletteAnnotation, RgbAnnotation
from medseg.formats.aul import rasterise, read_polygon
from medseg.formats.masks import decode_mask
from medseg.io.errors import DataError
from medseg.io.images import RawMask

CLASSES = ["background", "benign", "malignant"]
P = Path("mask.png")


def rgb_ann(tolerance=0):
    return RgbAnnotation(format="rgb", tolerance=tolerance,
                         colors={"background": (0, 0, 0), "benign": (0, 255, 0), "malignant": (255, 0, 0)})


def test_rgb_exact_colours_map_to_classes():
    px = np.zeros((2, 3, 3), np.uint8)
    px[0, 0] = (0, 255, 0)
    px[1, 2] = (255, 0, 0)
    out = decode_mask(RawMask(px, "RGB"), rgb_ann(), CLASSES, P)
    assert out.label.tolist() == [[1, 0, 0], [0, 0, 2]]
    assert out.snapped == 0


def test_rgb_order_is_not_bgr():
    # Pure blue is not red: an implementation reading BGR as RGB would map it to malignant.
    px = np.zeros((1, 2, 3), np.uint8)
    px[0, 0] = (0, 0, 255)
    with pytest.raises(DataError, match=r"RGB\(0, 0, 255\) \(1 px\)"):
        decode_mask(RawMask(px, "RGB"), rgb_ann(tolerance=40), CLASSES, P)


def test_rgb_snaps_within_tolerance_and_counts_moved_pixels():
    px = np.zeros((1, 4, 3), np.uint8)
    px[0, 0] = (10, 240, 5)   # near green
    px[0, 1] = (250, 3, 0)    # near red
    px[0, 2] = (0, 0, 9)      # near black
    out = decode_mask(RawMask(px, "RGB"), rgb_ann(tolerance=20), CLASSES, P)
    assert out.label.tolist() == [[1, 2, 0, 0]]
    assert out.snapped == 3


def test_rgb_beyond_tolerance_names_file_colour_and_count():
    px = np.zeros((3, 3, 3), np.uint8)
    px[0, :] = (128, 128, 0)
    with pytest.raises(DataError) as err:
        decode_mask(RawMask(px, "RGB"), rgb_ann(tolerance=20), CLASSES, P)
    assert str(err.value).startswith("mask.png: ")
    assert "RGB(128, 128, 0) (3 px)" in str(err.value)


def test_palette_file_under_rgb_format_uses_its_colours():
    pal = np.zeros((256, 3), np.uint8)
    pal[1] = (0, 255, 0)
    pal[2] = (255, 0, 0)
    idx = np.array([[0, 1, 2]], np.uint8)
    out = decode_mask(RawMask(idx, "P", pal), rgb_ann(), CLASSES, P)
    assert out.label.tolist() == [[0, 1, 2]]


def test_grey_levels():
    ann = GreyAnnotation(format="grey", values={"background": 0, "benign": 128, "malignant": 255}, tolerance=10)
    px = np.array([[0, 120, 255, 5]], np.uint8)
    out = decode_mask(RawMask(px, "L"), ann, CLASSES, P)
    assert out.label.tolist() == [[0, 1, 2, 0]]
    assert out.snapped == 2
    with pytest.raises(DataError, match="grey 64"):
        decode_mask(RawMask(np.array([[64]], np.uint8), "L"), ann, CLASSES, P)


def test_grey_refuses_colour_and_palette_masks():
    ann = GreyAnnotation(format="grey", values={"background": 0, "benign": 255})
    colour = np.zeros((1, 1, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    with pytest.raises(DataError, match="colour mask"):
        decode_mask(RawMask(colour, "RGB"), ann, CLASSES, P)
    pal = np.zeros((256, 3), np.uint8)
    pal[1] = (255, 0, 0)
    with pytest.raises(DataError, match="palette"):
        decode_mask(RawMask(np.array([[0, 1]], np.uint8), "P", pal), ann, CLASSES, P)
    pal[1] = (255, 255, 255)  # a palette of greys (GIF's way of storing a grey mask) holds grey levels
    assert decode_mask(RawMask(np.array([[0, 1]], np.uint8), "P", pal), ann, CLASSES, P).label.tolist() == [[0, 1]]


def test_binary_threshold_and_jpeg_levels():
    ann = BinaryAnnotation(format="binary", foreground="malignant", threshold=128)
    px = np.array([[0, 3, 127, 128, 250, 255]], np.uint8)
    out = decode_mask(RawMask(px, "L"), ann, CLASSES, P)
    assert out.label.tolist() == [[0, 0, 0, 2, 2, 2]]
    assert out.snapped == 4  # every level that is neither 0 nor 255


def test_palette_indices_not_colours():
    ann = PaletteAnnotation(format="palette", indices={"background": 0, "benign": 3, "malignant": 7})
    pal = np.zeros((256, 3), np.uint8)
    idx = np.array([[0, 3, 7]], np.uint8)
    out = decode_mask(RawMask(idx, "P", pal), ann, CLASSES, P)
    assert out.label.tolist() == [[0, 1, 2]]
    with pytest.raises(DataError, match="index 5"):
        decode_mask(RawMask(np.array([[5]], np.uint8), "P", pal), ann, CLASSES, P)
    with pytest.raises(DataError, match="expected an indexed"):
        decode_mask(RawMask(np.zeros((1, 1, 3), np.uint8), "RGB"), ann, CLASSES, P)


def test_rasterise_concave_polygon():
    # An L shape: the notch at the top right must stay empty.
    pts = np.array([[0, 0], [4, 0], [4, 9], [9, 9], [9, 12], [0, 12]], float)
    label = rasterise((14, 12), [(pts, 1)])
    assert label[2, 2] == 1 and label[11, 8] == 1
    assert label[2, 8] == 0  # inside the bounding box, outside the L
    assert set(np.unique(label)) == {0, 1}


def test_rasterise_later_polygons_on_top():
    big = np.array([[0, 0], [9, 0], [9, 9], [0, 9]], float)
    small = np.array([[3, 3], [6, 3], [6, 6], [3, 6]], float)
    label = rasterise((10, 10), [(big, 1), (small, 2)])
    assert label[4, 4] == 2 and label[1, 1] == 1
    assert (label == 2).sum() == 16  # 4x4 pixel centres from 3..6 inclusive


def test_read_polygon_formats(tmp_path):
    good = tmp_path / "1.json"
    good.write_text(json.dumps([[1, 2], [3.5, 4], [5, 1]]))
    assert read_polygon(good).shape == (3, 2)
    empty = tmp_path / "2.json"
    empty.write_text("[]")
    assert read_polygon(empty) is None
    for name, text, msg in [("3.json", '{"points": []}', "flat list"), ("4.json", "[[1, 2], [3]]", "flat list"),
                            ("5.json", "[[1, 2], [3, 4]]", "at least 3"), ("6.json", "[[1,", "unreadable")]:
        bad = tmp_path / name
        bad.write_text(text)
        with pytest.raises(DataError, match=msg) as err:
            read_polygon(bad)
        assert name in str(err.value)


def test_outliers_within_the_allowed_fraction_snap_and_are_counted():
    px = np.zeros((10, 10, 3), np.uint8)
    px[0, 0] = (0, 200, 0)    # within tolerance of green
    px[0, 1] = (120, 130, 0)  # beyond tolerance: nearest is green (distance 120 vs 130)
    ann = RgbAnnotation(format="rgb", tolerance=60, max_outlier_fraction=0.01,
                        colors={"background": (0, 0, 0), "benign": (0, 255, 0), "malignant": (255, 0, 0)})
    out = decode_mask(RawMask(px, "RGB"), ann, CLASSES, P)
    assert out.label[0, :3].tolist() == [1, 1, 0]
    assert out.snapped == 2 and out.outliers == 1
    px[0, 2] = (120, 130, 0)  # two outlier pixels of 100: 2% > 1%
    with pytest.raises(DataError, match=r"mask.png: .* covering 2 pixels \(2.000% of the mask, more than "
                                        r"max_outlier_fraction 0.01\)"):
        decode_mask(RawMask(px, "RGB"), ann, CLASSES, P)


def test_grey_outliers_follow_the_same_rule():
    ann = GreyAnnotation(format="grey", values={"background": 0, "benign": 255}, max_outlier_fraction=0.25)
    out = decode_mask(RawMask(np.array([[0, 255, 200, 0]], np.uint8), "L"), ann, CLASSES, P)
    assert out.label.tolist() == [[0, 1, 1, 0]] and out.outliers == 1
    with pytest.raises(DataError, match="max_outlier_fraction 0.25"):
        decode_mask(RawMask(np.array([[0, 100, 200, 0]], np.uint8), "L"), ann, CLASSES, P)
