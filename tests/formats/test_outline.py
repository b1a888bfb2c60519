"""The ``outline`` format: rings drawn as ink, filled per contour, against maps computed by flood fill."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from conftest import ramp, save
from medseg.config import ConvertConfig
from medseg.formats.convert import convert_dataset
from medseg.formats.outline import fill_outlines
from medseg.io.errors import DataError
from medseg.io.images import read_png

H, W = 64, 80


def ring(centre=(40, 32), axes=(24, 16), thickness=1, arc=(0, 360)) -> np.ndarray:
    ink = np.zeros((H, W), np.uint8)
    cv2.ellipse(ink, centre, axes, 15, arc[0], arc[1], 255, thickness)
    return ink


def enclosed(ink: np.ndarray) -> np.ndarray:
    """Ink and every pixel the outside cannot reach by 4-neighbour steps: filling by flood fill, not by contours."""
    canvas = np.pad((ink > 0).astype(np.uint8), 1)
    mask = np.zeros((canvas.shape[0] + 2, canvas.shape[1] + 2), np.uint8)
    cv2.floodFill(canvas, mask, (0, 0), 2, flags=4)
    return (canvas != 2)[1:-1, 1:-1]


@pytest.mark.parametrize("thickness", [1, 2, 3, 5])
def test_a_closed_ring_of_any_thickness_is_filled(thickness):
    ink = ring(thickness=thickness)
    region = fill_outlines(ink > 0, holes=False, path="m.png")
    assert (region == enclosed(ink)).all()
    solid = np.zeros((H, W), np.uint8)
    cv2.ellipse(solid, (40, 32), (24, 16), 15, 0, 360, 1, cv2.FILLED)
    assert region[solid > 0].mean() > 0.98  # the ring's inside, whatever its thickness (cv2 draws the two a
    # pixel apart in places)


def test_nested_rings_are_holes_only_when_params_say_so():
    outer, inner = ring(axes=(30, 24), thickness=2), ring(axes=(12, 8), thickness=2)
    ink = (outer | inner) > 0
    assert (fill_outlines(ink, holes=False, path="m.png") == enclosed(outer)).all()
    hole = enclosed(inner) & ~(inner > 0)   # strictly inside the inner ring
    assert (fill_outlines(ink, holes=True, path="m.png") == (enclosed(outer) & ~hole)).all()


def test_an_island_inside_a_hole_is_a_region_again():
    rings = [ring(axes=(34, 28)), ring(axes=(22, 16)), ring(axes=(8, 5))]
    ink = np.any(rings, axis=0)
    island = enclosed(rings[2])
    expected = (enclosed(rings[0]) & ~(enclosed(rings[1]) & ~(rings[1] > 0))) | island
    assert (fill_outlines(ink, holes=True, path="m.png") == expected).all()


def test_separate_rings_are_each_filled():
    a, b = ring(centre=(18, 20), axes=(10, 8)), ring(centre=(60, 40), axes=(12, 9), thickness=3)
    region = fill_outlines((a | b) > 0, holes=False, path="m.png")
    assert (region == (enclosed(a) | enclosed(b))).all()


def test_an_open_ring_is_an_error_naming_the_file_and_the_gap():
    ink = ring(arc=(40, 340), thickness=2)
    with pytest.raises(DataError, match="masks/m.png: open outline") as err:
        fill_outlines(ink > 0, holes=False, path="masks/m.png")
    ends = cv2.ellipse2Poly((40, 32), (24, 16), 15, 40, 340, 1)[[0, -1]]
    found = [tuple(map(int, m)) for m in re.findall(r"\(x=(\d+), y=(\d+)\)", str(err.value))]
    assert len(found) == 2
    for end in ends:  # each true end of the arc is within 2 px of a reported end
        assert min(np.hypot(*(np.array(f) - end)) for f in found) <= 2, (found, ends)
    assert "close_gaps to at least" in str(err.value)


def test_a_closing_tolerance_bridges_a_small_gap_and_no_more():
    ink = ring(arc=(8, 352), thickness=2)   # a gap of about 5 px
    full = enclosed(ring(thickness=2))
    region = fill_outlines(ink > 0, holes=False, path="m.png", close_gaps=3)
    assert (region & full).sum() / (region | full).sum() > 0.97
    with pytest.raises(DataError, match="close_gaps 1 does not bridge it"):
        fill_outlines(ink > 0, holes=False, path="m.png", close_gaps=1)


def outline_cfg(**annotation) -> ConvertConfig:
    return ConvertConfig(annotation={"format": "outline", "foreground": "head", **annotation},
                         classes=["background", "head"],
                         layout={"images": "images", "masks": "masks", "mask_name": "{stem}_Annotation"})


def test_outline_drawings_through_convert_including_jpeg(tmp_path):
    raw = tmp_path / "raw"
    for stem, thickness in (("a", 1), ("b", 3)):
        save(raw / "images" / f"{stem}.png", ramp(H, W, 1))
        save(raw / "masks" / f"{stem}_Annotation.jpg", ring(thickness=thickness), quality=90)
    report = convert_dataset(raw, tmp_path / "out", outline_cfg(), workers=1)
    assert report["format"] == "outline" and report["count"] == 2
    for stem, thickness in (("a", 1), ("b", 3)):
        label = read_png(tmp_path / "out" / "labels" / f"{stem}.png")
        expected = enclosed(ring(thickness=thickness))
        assert (label > 0).sum() == pytest.approx(expected.sum(), rel=0.03)
        assert set(np.unique(label)) == {0, 1}


def test_an_open_outline_stops_convert_or_is_skipped(tmp_path):
    raw = tmp_path / "raw"
    save(raw / "images" / "a.png", ramp(H, W, 1))
    save(raw / "masks" / "a_Annotation.png", ring())
    save(raw / "images" / "b.png", ramp(H, W, 1))
    save(raw / "masks" / "b_Annotation.png", ring(arc=(30, 330)))
    with pytest.raises(DataError, match="b_Annotation.png: open outline"):
        convert_dataset(raw, tmp_path / "out", outline_cfg(), workers=1)
    report = convert_dataset(raw, tmp_path / "out2", outline_cfg(close_gaps=0).model_copy(update={"on_error": "skip"}),
                             workers=1)
    assert report["count"] == 1 and "open outline" in report["skipped"][0]["problem"]
