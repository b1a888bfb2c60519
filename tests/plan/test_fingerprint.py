"""The fingerprint measures what the plan needs, on label maps whose answers are known."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from medseg.data import converted
from medseg.data.converted import ConvertedDataset
from medseg.plan.fingerprint import fingerprint


def write(root, samples: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[str]) -> ConvertedDataset:
    converted.create(root)
    rows = []
    for sid, (image, label) in samples.items():
        converted.write_sample(root, sid, image, label)
        rows.append(converted.manifest_row(sid, sid, "x", image.shape[:2], f"{sid}.png", f"{sid}.png",
                                           np.bincount(label.ravel(), minlength=len(classes)), classes))
    converted.write_manifest(root, rows)
    converted.write_report(root, {"classes": classes, "channels": 1})
    return ConvertedDataset(root)


def test_widths_and_areas_of_strips_and_discs(tmp_path) -> None:
    strip = np.zeros((100, 200), np.uint8)
    strip[40:44, 10:190] = 1  # a vessel-like strip 4 px wide
    disc = np.zeros((100, 200), np.uint8)
    cv2.circle(disc, (100, 50), 30, 2, -1)  # a mass-like disc of diameter 61
    image = np.full((100, 200), 90, np.uint8)
    fp = fingerprint(write(tmp_path / "c", {"a": (image, strip), "b": (image, disc)},
                           ["background", "vessel", "mass"]))
    assert fp["images"] == 2 and fp["shape"]["median"] == [100, 200] and fp["shape"]["aspect"] == 2.0
    vessel, mass = fp["classes"]["vessel"], fp["classes"]["mass"]
    assert vessel["width_px"]["median"] == pytest.approx(4, abs=0.5)  # a strip's width
    assert mass["width_px"]["median"] == pytest.approx(30, rel=0.1)  # half a disc's diameter
    assert mass["images"] == 1 and mass["regions_per_image"] == 1
    assert mass["area_fraction"]["median"] == pytest.approx(np.pi * 30 ** 2 / 20000, rel=0.05)
    assert vessel["pixel_fraction"] == pytest.approx(4 * 180 / 40000)
    assert fp["intensity"]["mean"] == 90


def test_specks_do_not_count_as_regions(tmp_path) -> None:
    label = np.zeros((50, 50), np.uint8)
    label[10:30, 10:30] = 1
    label[45, 45] = 1  # one annotation speck
    fp = fingerprint(write(tmp_path / "c", {"a": (np.zeros((50, 50), np.uint8), label)}, ["background", "lesion"]))
    assert fp["classes"]["lesion"]["regions_per_image"] == 1
