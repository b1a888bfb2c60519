"""Read images and masks strictly; write canonical PNGs.

Decoding goes through Pillow because it refuses truncated files, whereas
OpenCV silently returns a grey-filled image for a truncated JPEG. Every
problem raises ``DataError`` naming the file:

- ``read_image(path, channels, max_pixels, bit_depth)`` -> uint8 (H, W) or (H, W, 3) RGB;
  an image of more than 8 bits per pixel is refused unless ``bit_depth``
  names a rule (``SCALERS``); ``read_image_scaled`` also says
  whether it applied one.
- ``read_mask(path, max_pixels)`` -> ``RawMask`` (array + Pillow mode + palette)
- ``write_png(path, array)`` writes grey or RGB uint8 arrays.
- ``read_png(path)`` reads back a PNG the pipeline wrote (fast, via OpenCV).
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .errors import DataError

# Pillow's own bomb guard is replaced by the configurable ``max_pixels``.
Image.MAX_IMAGE_PIXELS = None


def display_path(path: Path) -> str:
    """A printable form of a path whose name may hold non-UTF-8 bytes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _open(path: Path, max_pixels: int, data: bytes | None = None) -> Image.Image:
    try:
        im = Image.open(path if data is None else io.BytesIO(data))
    except FileNotFoundError:
        raise DataError(display_path(path), "file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(display_path(path), f"not a readable image ({exc})") from None
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise DataError(display_path(path),
                        f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}")
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        im.close()
        raise DataError(display_path(path), f"{frames} pages (multi-page {im.format or 'image'}); only "
                                            "single-page images are read: save each page as a file of its own")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow warns on some corrupt data instead of raising
            im.load()
    except (OSError, SyntaxError, ValueError, Warning) as exc:
        raise DataError(display_path(path), f"truncated or corrupt image data ({exc})") from None
    return im


_EIGHT_BIT = {"L", "RGB", "RGBA", "LA", "P", "1", "CMYK", "YCbCr"}


def _minmax(pixels: np.ndarray, path: Path) -> np.ndarray:
    """Each image's own range onto 0..255, rounded half up (a constant image becomes 0)."""
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise DataError(display_path(path), "non-finite pixel values; bit_depth rule 'minmax' cannot scale them")
    lo, hi = pixels.min(), pixels.max()
    if hi == lo:
        return np.zeros(pixels.shape, np.uint8)
    if pixels.dtype.kind == "f":
        return np.floor((pixels.astype(np.float64) - lo) * (255.0 / (float(hi) - float(lo))) + 0.5).astype(np.uint8)
    span = int(hi) - int(lo)  # integers stay exact: (2 * 255 * x + span) // (2 * span) rounds half up
    return ((2 * 255 * (pixels.astype(np.int64) - int(lo)) + span) // (2 * span)).astype(np.uint8)


def _shift(pixels: np.ndarray, path: Path) -> np.ndarray:
    """The top 8 of 16 bits, the same scale for every image."""
    if pixels.dtype.kind == "f" or pixels.min() < 0 or pixels.max() > 0xFFFF:
        raise DataError(display_path(path), "pixel values are not 16-bit unsigned integers; bit_depth rule "
                                            "'shift' needs them (use 'minmax')")
    return (pixels.astype(np.uint32) >> 8).astype(np.uint8)


# How an image of more than 8 bits per pixel becomes 8-bit (medseg.config's BIT_DEPTH_RULES; "refuse" stops).
SCALERS = {"minmax": _minmax, "shift": _shift}


def read_image_scaled(path: Path, channels: int, max_pixels: int, bit_depth: str = "refuse",
                      data: bytes | None = None) -> tuple[np.ndarray, bool]:
    """Decode an image as grey (H, W) or RGB (H, W, 3) uint8; also whether a ``bit_depth`` rule scaled it.

    ``data``: the file's bytes when they are held elsewhere (an image embedded in a LabelMe JSON); ``path`` then
    only names it in errors.
    """
    im = _open(Path(path), max_pixels, data)
    if im.mode in _EIGHT_BIT:
        return np.asarray(im.convert("L" if channels == 1 else "RGB")), False
    if im.mode not in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        raise DataError(display_path(path), f"unsupported pixel mode {im.mode!r}")
    if bit_depth == "refuse":
        raise DataError(display_path(path), f"pixel mode {im.mode!r} is not 8-bit; set the dataset's "
                                            "convert.bit_depth.rule (minmax or shift) or convert the image to 8-bit")
    grey = SCALERS[bit_depth](np.asarray(im), path)
    return (grey if channels == 1 else np.repeat(grey[..., None], 3, axis=2)), True


def read_image(path: Path, channels: int, max_pixels: int, bit_depth: str = "refuse") -> np.ndarray:
    """Decode an image as grey (H, W) or RGB (H, W, 3) uint8."""
    return read_image_scaled(path, channels, max_pixels, bit_depth)[0]


@dataclass(frozen=True)
class RawMask:
    """A mask as stored: ``pixels`` is (H, W) for L/P masks, (H, W, 3) for RGB."""

    pixels: np.ndarray
    mode: str
    palette: np.ndarray | None = None  # (256, 3) RGB for palette masks

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape[:2]


def read_mask(path: Path, max_pixels: int) -> RawMask:
    """Decode a mask without changing its values: indices stay indices."""
    im = _open(Path(path), max_pixels)
    if im.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        raise DataError(display_path(path), f"{im.mode} mask (more than 8 bits per pixel); masks must be 8-bit")
    if im.mode == "P":
        pal = np.zeros((256, 3), np.uint8)
        raw = np.frombuffer(bytes(im.getpalette() or []), np.uint8)[: 256 * 3].reshape(-1, 3)
        pal[: len(raw)] = raw
        return RawMask(np.asarray(im), "P", pal)
    if im.mode in {"L", "1"}:
        return RawMask(np.asarray(im.convert("L")), "L")
    if im.mode in {"RGB", "RGBA", "CMYK", "YCbCr"}:
        return RawMask(np.asarray(im.convert("RGB")), "RGB")
    if im.mode == "LA":
        return RawMask(np.asarray(im.convert("L")), "L")
    raise DataError(display_path(path), f"unsupported mask pixel mode {im.mode!r}")


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 grey (H, W) or RGB (H, W, 3) array."""
    if array.dtype != np.uint8:
        raise TypeError(f"PNG encoding expects uint8, got {array.dtype}")
    data = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    ok, buf = cv2.imencode(".png", data, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"PNG encoding failed for an array of shape {array.shape}")
    return buf.tobytes()


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a uint8 grey (H, W) or RGB (H, W, 3) array as PNG (into a folder written atomically)."""
    Path(path).write_bytes(encode_png(array))


def read_png(path: Path) -> np.ndarray:
    """Read an 8-bit PNG this pipeline wrote (grey or RGB); fast path via OpenCV."""
    try:
        raw = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise DataError(display_path(path), f"cannot read: {exc.strerror}") from None
    data = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if data is None:
        raise DataError(display_path(path), "cannot decode PNG")
    if data.dtype != np.uint8:
        raise DataError(display_path(path), f"expected 8-bit pixels, got {data.dtype}")
    return cv2.cvtColor(data, cv2.COLOR_BGR2RGB) if data.ndim == 3 else data
