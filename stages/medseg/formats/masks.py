"""Mask codecs: turn each annotation format into a uint8 label map.

A label map holds class indices (0 = background) in the order of the
dataset's ``classes``. Decoders return a ``Decoded`` with the label map and
the number of pixels whose stored value was snapped to a listed colour (lossy
masks such as JPEG). A value beyond the tolerance raises ``DataError`` that
names the file, the value and how many pixels have it, unless such outliers
cover at most ``max_outlier_fraction`` of the mask: they then snap to the
nearest class too and are counted apart.

Formats: ``rgb`` colour maps, ``grey`` level maps, ``binary`` with a
threshold, ``outline`` (closed contours drawn as ink, filled by
``medseg.formats.outline``), ``palette`` (indexed PNG). ``merge_masks`` joins the several
masks of one image. AUL's polygon annotations are read by
``medseg.formats.aul``.

With an ignore label (``convert.ignore``), its mask value (grey, palette,
binary) or colour (rgb) becomes ``IGNORE`` in the label map: for grey and
rgb it is one more listed value, which lossy pixels snap to as well; for
binary it is matched exactly, before the threshold.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from medseg.config import (
    BinaryAnnotation,
    GreyAnnotation,
    IgnoreLabel,
    OutlineAnnotation,
    PaletteAnnotation,
    RgbAnnotation,
)
from medseg.data.converted import IGNORE
from medseg.io.errors import DataError
from medseg.io.images import RawMask, display_path

from .outline import fill_outlines

Snapped = RgbAnnotation | GreyAnnotation  # the formats that snap lossy values to a listed one


@dataclass(frozen=True)
class Decoded:
    label: np.ndarray  # (H, W) uint8 class indices
    snapped: int  # pixels whose value was moved to the nearest listed value
    outliers: int = 0  # of those, pixels beyond the tolerance (allowed by max_outlier_fraction)


def _snap(values: np.ndarray, counts: np.ndarray, total: int, table: np.ndarray, ann: Snapped, path: Path,
          describe) -> tuple[np.ndarray, int]:
    """Index of the nearest row of ``table`` for each distinct stored value (rows of ``values``), and the outliers.

    Distance is the largest per-channel difference. Values beyond the
    tolerance are outliers: they snap too while their pixels (``counts``)
    are at most ``max_outlier_fraction`` of the mask's ``total`` pixels,
    else they raise.
    """
    dist = np.abs(values[:, None, :].astype(np.int16) - table[None, :, :].astype(np.int16)).max(axis=2)
    nearest = dist.argmin(axis=1)
    best = dist[np.arange(len(values)), nearest]
    bad = best > ann.tolerance
    outliers = int(counts[bad].sum())
    if outliers > ann.max_outlier_fraction * total:
        order = np.argsort(-counts[bad])
        worst = [f"{describe(v)} ({int(c)} px)"
                 for v, c in zip(values[bad][order][:5], counts[bad][order][:5], strict=True)]
        raise DataError(
            display_path(path),
            f"{int(bad.sum())} mask value(s) not in the class map (tolerance {ann.tolerance}), "
            f"covering {outliers} pixels ({outliers / total:.3%} of the mask, more than "
            f"max_outlier_fraction {ann.max_outlier_fraction}): {', '.join(worst)}",
        )
    return nearest, outliers


def _pack(values: np.ndarray) -> np.ndarray:
    """Rows of 1-3 uint8 channels -> one uint32 per row."""
    packed = values[:, 0].astype(np.uint32)
    for ch in range(1, values.shape[1]):
        packed = (packed << 8) | values[:, ch]
    return packed


def _lut_decode(stored: np.ndarray, table: np.ndarray, class_ids: np.ndarray, ann: Snapped, path: Path,
                describe) -> Decoded:
    """Decode a mask through the nearest entry of ``table`` (rows of channel values)."""
    flat = stored.reshape(-1, stored.shape[-1]) if stored.ndim == 3 else stored.reshape(-1, 1)
    packed = _pack(flat)
    label = np.zeros(packed.shape, np.uint8)
    listed = np.zeros(packed.shape, bool)
    # Exact colours first: a few equality passes are far cheaper than sorting
    # every pixel, and lossless masks never need more.
    for code, class_id in zip(_pack(table), class_ids, strict=True):
        exact = packed == code
        label[exact] = class_id
        listed |= exact
    pending = np.flatnonzero(~listed)
    outliers = 0
    if pending.size:
        uniq, inverse, counts = np.unique(packed[pending], return_inverse=True, return_counts=True)
        channels = flat.shape[1]
        values = np.stack([(uniq >> (8 * (channels - 1 - ch))) & 0xFF for ch in range(channels)], axis=1)
        nearest, outliers = _snap(values, counts, label.size, table, ann, path, describe)
        label[pending] = class_ids[nearest][inverse]
    return Decoded(label.reshape(stored.shape[:2]), int(pending.size), outliers)


def _with_ignore(table: list, ids: list[int], entry: object | None) -> tuple[np.ndarray, np.ndarray]:
    """The lookup table and its class ids, with the ignore label's ``entry`` as one more row (``IGNORE``)."""
    if entry is not None:
        table, ids = [*table, entry], [*ids, IGNORE]
    return np.array(table, np.uint8), np.array(ids)


def decode_rgb(mask: RawMask, ann: RgbAnnotation, classes: Sequence[str], path: Path,
               ignore: IgnoreLabel | None = None) -> Decoded:
    """Colour map; colours in ``ann.colors`` are RGB (``RawMask`` is RGB too)."""
    if mask.mode == "P":
        pixels = mask.palette[mask.pixels]  # an indexed file still stores colours
    elif mask.mode == "L":
        pixels = np.repeat(mask.pixels[..., None], 3, axis=2)
    else:
        pixels = mask.pixels
    names = list(ann.colors)
    table, ids = _with_ignore([ann.colors[n] for n in names], [classes.index(n) for n in names],
                              None if ignore is None else ignore.color)
    return _lut_decode(pixels, table, ids, ann, path, lambda v: f"RGB{tuple(int(x) for x in v)}")


def as_grey(mask: RawMask, path: Path, allow_colour: bool) -> np.ndarray:
    if mask.mode == "L":
        return mask.pixels
    if mask.mode == "P":
        # GIF stores even a black-and-white mask as palette indices; a palette
        # of greys still says which grey each pixel is.
        colours = mask.palette[np.unique(mask.pixels)]
        if not (colours == colours[:, :1]).all():
            raise DataError(display_path(path), "indexed (palette) mask; use annotation format 'palette'")
        return mask.palette[mask.pixels, 0]
    if allow_colour:
        return cv2.cvtColor(mask.pixels, cv2.COLOR_RGB2GRAY)
    px = mask.pixels
    if not ((px[..., 0] == px[..., 1]) & (px[..., 1] == px[..., 2])).all():
        raise DataError(display_path(path), "colour mask where grey levels were expected")
    return mask.pixels[..., 0]


def decode_grey(mask: RawMask, ann: GreyAnnotation, classes: Sequence[str], path: Path,
                ignore: IgnoreLabel | None = None) -> Decoded:
    grey = as_grey(mask, path, allow_colour=False)
    names = list(ann.values)
    table, ids = _with_ignore([[ann.values[n]] for n in names], [classes.index(n) for n in names],
                              None if ignore is None else [ignore.value])
    return _lut_decode(grey, table, ids, ann, path, lambda v: f"grey {int(v[0])}")


def decode_binary(mask: RawMask, ann: BinaryAnnotation, classes: Sequence[str], path: Path,
                  ignore: IgnoreLabel | None = None) -> Decoded:
    """Threshold a two-level mask; JPEG ringing makes many near-0/255 levels. The ignore value is matched
    exactly, before the threshold."""
    grey = as_grey(mask, path, allow_colour=True)
    ignored = grey == ignore.value if ignore is not None else np.zeros(grey.shape, bool)
    label = ((grey >= ann.threshold) * classes.index(ann.foreground)).astype(np.uint8)
    label[ignored] = IGNORE
    snapped = int(np.count_nonzero((grey != 0) & (grey != 255) & ~ignored))
    return Decoded(label, snapped)


def decode_outline(mask: RawMask, ann: OutlineAnnotation, classes: Sequence[str], path: Path,
                   ignore: IgnoreLabel | None = None) -> Decoded:
    """Fill the closed outlines of a drawing (ink ``>= threshold``) with ``ann.foreground``."""
    ink = as_grey(mask, path, allow_colour=True) >= ann.threshold
    region = fill_outlines(ink, ann.holes, path, ann.close_gaps)
    return Decoded((region * classes.index(ann.foreground)).astype(np.uint8), 0)


def decode_palette(mask: RawMask, ann: PaletteAnnotation, classes: Sequence[str], path: Path,
                   ignore: IgnoreLabel | None = None) -> Decoded:
    if mask.mode != "P":
        raise DataError(display_path(path), f"expected an indexed (palette) PNG, got pixel mode {mask.mode!r}")
    lut, listed = np.zeros(256, np.uint8), np.zeros(256, bool)
    for name, index in ann.indices.items():
        lut[index], listed[index] = classes.index(name), True
    if ignore is not None:
        lut[ignore.value], listed[ignore.value] = IGNORE, True
    label = lut[mask.pixels]
    unknown = ~listed[mask.pixels]
    if unknown.any():
        idx, cnt = np.unique(mask.pixels[unknown], return_counts=True)
        worst = ", ".join(f"index {int(i)} = RGB{tuple(int(x) for x in mask.palette[i])} ({int(c)} px)"
                          for i, c in list(zip(idx, cnt, strict=True))[:5])
        raise DataError(display_path(path), f"palette indices not in the class map: {worst}")
    return Decoded(label, 0)


DECODERS = {"rgb": decode_rgb, "grey": decode_grey, "binary": decode_binary, "outline": decode_outline,
            "palette": decode_palette}


def decode_mask(mask: RawMask, ann, classes: Sequence[str], path: Path, ignore: IgnoreLabel | None = None,
                ) -> Decoded:
    """Dispatch on ``ann.format``; ``ignore``: the dataset's ignore label (``convert.ignore``), if any."""
    return DECODERS[ann.format](mask, ann, classes, path, ignore)


def merge_masks(decoded: Sequence[tuple[Decoded, Path]], classes: Sequence[str]) -> Decoded:
    """One label map from several masks of one image (the union of each class's pixels).

    A pixel that two masks give different foreground classes raises
    ``DataError`` naming both files. A pixel one mask ignores (``IGNORE``)
    takes the class another gives it: that mask's doubt is about its own
    structure.
    """
    label = decoded[0][0].label.copy()
    owner = np.where(label > 0, 0, -1)
    for k, (part, path) in enumerate(decoded[1:], start=1):
        ignored = part.label == IGNORE
        part_class = (part.label > 0) & ~ignored
        clash = part_class & (label > 0) & (label != IGNORE) & (part.label != label)
        if clash.any():
            y, x = (int(c[0]) for c in np.nonzero(clash))
            other = decoded[int(owner[y, x])][1]
            raise DataError(display_path(path), f"{int(clash.sum())} pixel(s) are {classes[part.label[y, x]]!r} "
                                                f"here but {classes[label[y, x]]!r} in {display_path(other.name)} "
                                                f"(first at x={x}, y={y}); the masks of one image disagree")
        fg = part_class | (ignored & (label == 0))
        label[fg], owner[fg] = part.label[fg], k
    return Decoded(label, sum(part.snapped for part, _ in decoded), sum(part.outliers for part, _ in decoded))
