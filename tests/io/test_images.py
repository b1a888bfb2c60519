"""Strict image reading: every broken file is refused with its name."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import ramp, save
from medseg.io.errors import DataError
from medseg.io.images import read_image, read_mask, read_png, write_png

LIMIT = 10_000_000


def test_grey_and_rgb_round_trip(tmp_path):
    rgb = ramp(channels=3)
    write_png(tmp_path / "a.png", rgb)
    assert (read_png(tmp_path / "a.png") == rgb).all()
    assert (read_image(tmp_path / "a.png", 3, LIMIT) == rgb).all()
    grey = read_image(tmp_path / "a.png", 1, LIMIT)
    assert grey.shape == rgb.shape[:2] and grey.dtype == np.uint8


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_file_is_refused(tmp_path, ext):
    path = save(tmp_path / f"t.{ext}", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        read_image(path, 1, LIMIT)
    assert f"t.{ext}" in str(err.value)


def test_not_an_image_and_missing(tmp_path):
    (tmp_path / "x.png").write_text("hello")
    with pytest.raises(DataError, match="not a readable image"):
        read_image(tmp_path / "x.png", 1, LIMIT)
    with pytest.raises(DataError, match="file not found"):
        read_image(tmp_path / "nope.png", 1, LIMIT)


def test_pixel_limit(tmp_path):
    path = save(tmp_path / "big.png", ramp(100, 100, 1))
    with pytest.raises(DataError, match="exceeds the limit of 5000"):
        read_image(path, 1, 5000)


def test_sixteen_bit_mask_refused(tmp_path):
    path = tmp_path / "m16.png"
    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(path)
    with pytest.raises(DataError, match="masks must be 8-bit") as err:
        read_mask(path, LIMIT)
    assert "m16.png" in str(err.value)


def test_palette_mask_keeps_indices(tmp_path):
    im = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    im.putpalette([0, 0, 0, 0, 255, 0, 255, 0, 0] + [0] * (253 * 3))
    im.save(tmp_path / "p.png")
    mask = read_mask(tmp_path / "p.png", LIMIT)
    assert mask.mode == "P"
    assert mask.pixels.tolist() == [[0, 1], [2, 1]]
    assert tuple(mask.palette[1]) == (0, 255, 0)


def test_non_utf8_file_name_is_printable(tmp_path):
    import os
    name = os.fsdecode(b"bad\xffname.png")
    path = save(tmp_path / name, ramp(channels=1))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError) as err:
        read_image(path, 1, LIMIT)
    assert "bad\\xffname.png" in str(err.value)
