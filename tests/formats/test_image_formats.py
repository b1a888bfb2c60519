"""TIFF, GIF and BMP files through the convert stage; images of more than 8 bits and the bit_depth rule."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from conftest import ramp, save
from medseg.config import BIT_DEPTH_RULES, ConvertConfig
from medseg.formats.convert import convert_dataset
from medseg.io.errors import DataError
from medseg.io.images import SCALERS, read_png


def cfg(channels: int = 1, **kw) -> ConvertConfig:
    return ConvertConfig(annotation={"format": "grey", "values": {"background": 0, "lesion": 255}},
                         classes=["background", "lesion"], channels=channels,
                         layout={"images": "images", "masks": "masks", "mask_name": "{stem}_mask"},
                         image_class={"source": "fixed", "value": "x"}, **kw)


def square() -> np.ndarray:
    mask = np.zeros((24, 32), np.uint8)
    mask[5:10, 5:12] = 255
    return mask


def converted(out: Path, sid: str = "a") -> tuple[np.ndarray, np.ndarray]:
    return read_png(out / "images" / f"{sid}.png"), read_png(out / "labels" / f"{sid}.png")


def pages(path: Path, n: int, dtype=np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [Image.fromarray(np.full((24, 32), k, dtype)) for k in range(n)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


WIDE = (np.arange(24 * 32).reshape(24, 32) * 80 + 1000).astype(np.uint16)  # 1000..62360


@pytest.mark.parametrize(("image_ext", "mask_ext", "kwargs"), [
    ("tif", "tif", {}),
    ("tiff", "tiff", {"compression": "tiff_lzw"}),
    ("png", "bmp", {}),
    ("png", "gif", {}),
])
def test_tiff_bmp_gif_files_convert_losslessly(tmp_path, image_ext, mask_ext, kwargs):
    raw, out = tmp_path / "raw", tmp_path / "out"
    save(raw / "images" / f"a.{image_ext}", ramp(24, 32, 1), **(kwargs if image_ext != "png" else {}))
    save(raw / "masks" / f"a_mask.{mask_ext}", square(), **(kwargs if mask_ext != "bmp" else {}))
    report = convert_dataset(raw, out, cfg(), workers=1)
    image, label = converted(out)
    assert (image == ramp(24, 32, 1)).all()
    assert (label == square() // 255).all() and report["snapped_pixels"] == 0


@pytest.mark.parametrize("which", ["images/a.tif", "masks/a_mask.tif"])
def test_multi_page_tiff_is_refused_naming_the_file(tmp_path, which):
    raw = tmp_path / "raw"
    save(raw / "images" / "a.tif", ramp(24, 32, 1))
    save(raw / "masks" / "a_mask.tif", square())
    pages(raw / which, 3)
    with pytest.raises(DataError, match=r"3 pages \(multi-page TIFF\)") as err:
        convert_dataset(raw, tmp_path / "out", cfg(), workers=1)
    assert str(err.value).startswith(str(raw / which))


def test_sixteen_bit_image_is_refused_by_default(tmp_path):
    raw = tmp_path / "raw"
    save(raw / "images" / "a.tif", WIDE)
    save(raw / "masks" / "a_mask.png", square())
    with pytest.raises(DataError, match=r"a.tif: pixel mode 'I;16' is not 8-bit; set the dataset's "
                                        r"convert.bit_depth.rule"):
        convert_dataset(raw, tmp_path / "out", cfg(), workers=1)


@pytest.mark.parametrize(("rule", "expected"), [
    ("minmax", ((WIDE.astype(np.int64) - 1000) * 255 * 2 + 61360) // (2 * 61360)),  # rounded half up
    ("shift", (WIDE >> 8).astype(np.uint8)),
])
@pytest.mark.parametrize("ext", ["tif", "png"])
def test_sixteen_bit_image_scaled_by_the_rule_and_reported(tmp_path, rule, expected, ext):
    raw, out = tmp_path / "raw", tmp_path / "out"
    save(raw / "images" / f"a.{ext}", WIDE)
    save(raw / "masks" / "a_mask.png", square())
    report = convert_dataset(raw, out, cfg(bit_depth={"rule": rule}), workers=1)
    assert (converted(out)[0] == expected).all()
    assert report["bit_depth"] == {"rule": rule, "scaled_images": 1}
    assert expected.min() == (0 if rule == "minmax" else 3) and expected.max() == (255 if rule == "minmax" else 243)


def test_a_black_and_white_gif_palette_is_read_as_grey_levels(tmp_path):
    raw = tmp_path / "raw"
    save(raw / "images" / "a.png", ramp(24, 32, 1))
    save(raw / "masks" / "a_mask.gif", square())
    assert Image.open(raw / "masks" / "a_mask.gif").mode == "P"  # Pillow writes 0/255 as indices 0/1
    convert_dataset(raw, tmp_path / "out", cfg(), workers=1)
    assert (converted(tmp_path / "out")[1] == square() // 255).all()


def test_sixteen_bit_image_into_three_channels(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    save(raw / "images" / "a.tif", WIDE)
    save(raw / "masks" / "a_mask.png", square())
    convert_dataset(raw, out, cfg(channels=3, bit_depth={"rule": "shift"}), workers=1)
    image = converted(out)[0]
    assert image.shape == (24, 32, 3) and (image == (WIDE >> 8).astype(np.uint8)[..., None]).all()


def test_sixteen_bit_mask_is_never_scaled(tmp_path):
    raw = tmp_path / "raw"
    save(raw / "images" / "a.png", ramp(24, 32, 1))
    save(raw / "masks" / "a_mask.tif", WIDE)
    with pytest.raises(DataError, match="a_mask.tif: I;16 mask .* masks must be 8-bit"):
        convert_dataset(raw, tmp_path / "out", cfg(bit_depth={"rule": "minmax"}), workers=1)


def test_bit_depth_rules_are_one_list():
    assert set(SCALERS) | {"refuse"} == set(BIT_DEPTH_RULES)
    with pytest.raises(ValidationError, match="'refuse', 'minmax' or 'shift'"):
        cfg(bit_depth={"rule": "clip"})
