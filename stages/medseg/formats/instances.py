"""Drawn instances (polygons, boxes, circles, RLE masks) checked and filled into one label map.

The formats of annotation tools (``medseg.formats.coco``, ``labelme``,
``cvat``) read their files into ``Instance`` records at discovery; the
convert stage's worker turns an image's instances into its label map with
``label_map``. Every instance is checked first, and a bad one raises
``DataError`` naming the annotation file, the image and the instance:

- a polygon needs three distinct points, finite coordinates inside the
  image, and no edge crossing or touching another (a self-intersecting
  polygon has no well-defined inside);
- an RLE mask must be of the image's size and well formed (``pycocotools``
  decodes it and refuses bad counts).

Coordinates: COCO and CVAT place points on the continuous image plane
(pixel ``(x, y)`` covers ``[x, x+1) x [y, y+1)``) and are filled as
``pycocotools`` fills them; LabelMe's points are pixel indices and are
filled as LabelMe draws them, boundary pixels included (``cv2.fillPoly``).
Overlaps go to the class later (or earlier) in the dataset's classes; the
regions of an ignored label (``convert.ignore.labels``) are ``IGNORE``
wherever they lie, over any class.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from medseg.data.converted import IGNORE
from medseg.io.errors import DataError
from medseg.io.images import display_path

_EPS = 1e-6


@dataclass(frozen=True)
class Instance:
    """One drawn region of one class; ``where`` says which, in the annotation file's terms, for messages."""

    class_id: int
    kind: str  # "polygon", "circle", "rle" (COCO) or "bits" (a mask over a box, CVAT)
    where: str
    points: np.ndarray | None = None  # polygon (N, 2) x, y; circle: the centre
    pixel_indices: bool = False  # points are pixel indices (LabelMe), not the continuous plane (COCO, CVAT)
    radius: float = 0.0
    rle: dict | None = None  # COCO: {"size": [h, w], "counts": [...] or "..."}
    bits: np.ndarray | None = None  # (h, w) bool, placed at (left, top)
    left: int = 0
    top: int = 0


# --------------------------------------------------------------------------- annotation files
def read_json(path: Path) -> object:
    """Parse a JSON file; a file that does not parse raises ``DataError`` with the line and column."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(display_path(path), "annotation file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(display_path(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(display_path(path), f"JSON does not parse: {exc.msg} at line {exc.lineno}, "
                                            f"column {exc.colno}") from None


def class_of(name: object, labels: dict[str, str], classes: Sequence[str], ignore: Sequence[str] = ()) -> int | None:
    """The class index of a label name (``IGNORE`` for a name in ``ignore``, then ``labels``, then a class of that
    name); ``None`` if unknown."""
    if not isinstance(name, str):
        return None
    if name in ignore:
        return IGNORE
    target = labels.get(name, name)
    return classes.index(target) if target in classes else None


def check_ignored_names(ignore: Sequence[str], names: Iterable[str], path: Path, what: str) -> None:
    """``DataError`` naming ``path`` when a name of ``convert.ignore.labels`` is not among the file's ``names``."""
    known = set(names)
    missing = [name for name in ignore if name not in known]
    if missing:
        raise DataError(display_path(path), f"convert.ignore.labels: {missing[0]!r} is not a {what} here; "
                                            f"{what}s are {sorted(known)}")


def unknown_label(name: object, labels: dict[str, str], classes: Sequence[str]) -> str:
    return (f"unknown category {name!r}: not in annotation.labels {sorted(labels)} nor a class {list(classes)}; "
            "map it in the dataset's annotation.labels")


def flat_points(values: object, where: str) -> np.ndarray:
    """``[x1, y1, x2, y2, ...]`` or ``[[x1, y1], ...]`` as an (N, 2) float array; ``ValueError`` if neither."""
    try:
        points = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: coordinates are not numbers") from None
    if points.ndim == 1 and points.size % 2 == 0:
        points = points.reshape(-1, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{where}: expected x, y pairs of numbers")
    return points


# --------------------------------------------------------------------------- polygon checks
def _distinct(points: np.ndarray) -> np.ndarray:
    """Drop repeated consecutive points and a closing point equal to the first."""
    keep = np.ones(len(points), bool)
    keep[1:] = np.any(points[1:] != points[:-1], axis=1)
    points = points[keep]
    if len(points) > 1 and (points[0] == points[-1]).all():
        points = points[:-1]
    return points


def _orientation(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    ab, ac = b - a, c - a
    return np.sign(ab[..., 0] * ac[..., 1] - ab[..., 1] * ac[..., 0])


def _on_segment(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """For p collinear with a-b: whether p lies within the segment's bounding box."""
    return ((np.minimum(a[..., 0], b[..., 0]) <= p[..., 0]) & (p[..., 0] <= np.maximum(a[..., 0], b[..., 0]))
            & (np.minimum(a[..., 1], b[..., 1]) <= p[..., 1]) & (p[..., 1] <= np.maximum(a[..., 1], b[..., 1])))


def crossing(points: np.ndarray) -> tuple[int, int] | None:
    """The first pair of edges (i, j) of a closed polygon that cross or touch without being neighbours, or ``None``.

    Edge ``i`` runs from point ``i`` to point ``i + 1`` (the last back to the first).
    """
    n = len(points)
    if n < 4:
        return None
    start, end = points, np.roll(points, -1, axis=0)
    rows = max(1, 250_000 // n)  # bound the pairwise arrays to a quarter million entries each
    for lo in range(0, n, rows):
        i = np.arange(lo, min(n, lo + rows))[:, None]
        j = np.arange(n)[None, :]
        a, b, c, d = start[i], end[i], start[j], end[j]
        o1, o2, o3, o4 = _orientation(a, b, c), _orientation(a, b, d), _orientation(c, d, a), _orientation(c, d, b)
        hit = (o1 != o2) & (o3 != o4) & (o1 * o2 <= 0) & (o3 * o4 <= 0)
        hit &= ~((o1 == 0) & (o2 == 0))  # collinear pairs: only an overlap counts
        collinear = (o1 == 0) & (o2 == 0) & (_on_segment(a, b, c) | _on_segment(a, b, d) | _on_segment(c, d, a))
        hit |= collinear
        neighbours = (np.abs(i - j) <= 1) | (np.abs(i - j) == n - 1)
        hit &= ~neighbours & (j > i)
        found = np.argwhere(hit)
        if len(found):
            return int(found[0][0] + lo), int(found[0][1])
    return None


def check_polygon(points: np.ndarray, shape: tuple[int, int], inst: Instance, path: Path) -> np.ndarray:
    """The polygon's distinct points, or ``DataError`` if it is degenerate, leaves the image or crosses itself."""
    if not np.isfinite(points).all():
        raise DataError(display_path(path), f"{inst.where}: polygon has non-finite coordinates")
    points = _distinct(points)
    if len(points) < 3:
        raise DataError(display_path(path), f"{inst.where}: polygon has {len(points)} distinct point(s); at least "
                                            "3 are needed")
    h, w = shape
    lo, hi = (-0.5, 0.5) if inst.pixel_indices else (0.0, 0.0)
    outside = ((points[:, 0] < lo - _EPS) | (points[:, 0] > w - hi + _EPS)
               | (points[:, 1] < lo - _EPS) | (points[:, 1] > h - hi + _EPS))
    if outside.any():
        x, y = points[np.argmax(outside)]
        raise DataError(display_path(path), f"{inst.where}: polygon point (x={x:g}, y={y:g}) is outside the "
                                            f"{w}x{h} image ({int(outside.sum())} of {len(points)} points are)")
    pair = crossing(points)
    if pair is not None:
        (i, j), n = pair, len(points)

        def edge(k: int) -> str:
            (x1, y1), (x2, y2) = points[k], points[(k + 1) % n]
            return f"({x1:g}, {y1:g})-({x2:g}, {y2:g})"

        raise DataError(display_path(path), f"{inst.where}: self-intersecting polygon: edge {edge(i)} crosses edge "
                                            f"{edge(j)}")
    return points


# --------------------------------------------------------------------------- filling
def _decode(rle: dict | list) -> np.ndarray:
    with warnings.catch_warnings():
        # pycocotools 2.0.11 builds its array the NumPy 1 way; NumPy 2 warns about it, harmlessly.
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(rle).astype(bool)


def _polygon(points: np.ndarray, shape: tuple[int, int], pixel_indices: bool) -> np.ndarray:
    h, w = shape
    if pixel_indices:
        region = np.zeros(shape, np.uint8)
        cv2.fillPoly(region, [np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)], 1, cv2.LINE_8, shift=4)
        return region.astype(bool)
    rles = coco_mask.frPyObjects([points.ravel().tolist()], h, w)
    return _decode(coco_mask.merge(rles))


def _rle(rle: dict, shape: tuple[int, int], inst: Instance, path: Path) -> np.ndarray:
    h, w = shape
    size, counts = rle.get("size"), rle.get("counts")
    if size != [h, w]:
        raise DataError(display_path(path), f"{inst.where}: RLE size {size} is not the image's [height, width] "
                                            f"[{h}, {w}]")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise DataError(display_path(path), f"{inst.where}: malformed RLE: counts must be non-negative integers")
        if sum(counts) != h * w:
            raise DataError(display_path(path), f"{inst.where}: malformed RLE: counts add up to {sum(counts)} "
                                                f"pixels, not the image's {h * w}")
        rle = coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    elif isinstance(counts, str):
        rle = {"size": [h, w], "counts": counts.encode("ascii", "replace")}
    else:
        raise DataError(display_path(path), f"{inst.where}: malformed RLE: counts must be a list or a string")
    try:
        return _decode(rle)
    except ValueError as exc:
        raise DataError(display_path(path), f"{inst.where}: malformed RLE ({exc})") from None


def _bits(inst: Instance, shape: tuple[int, int], path: Path) -> np.ndarray:
    h, w = shape
    bh, bw = inst.bits.shape
    if inst.left < 0 or inst.top < 0 or inst.left + bw > w or inst.top + bh > h:
        raise DataError(display_path(path), f"{inst.where}: mask box left={inst.left}, top={inst.top}, "
                                            f"{bw}x{bh} is outside the {w}x{h} image")
    region = np.zeros(shape, bool)
    region[inst.top:inst.top + bh, inst.left:inst.left + bw] = inst.bits
    return region


def _circle(inst: Instance, shape: tuple[int, int], path: Path) -> np.ndarray:
    (x, y), r, (h, w) = inst.points[0], inst.radius, shape
    if not (np.isfinite([x, y, r]).all() and -0.5 <= x - r and x + r <= w - 0.5 and -0.5 <= y - r
            and y + r <= h - 0.5):
        raise DataError(display_path(path), f"{inst.where}: circle at (x={x:g}, y={y:g}) of radius {r:g} is not "
                                            f"inside the {w}x{h} image")
    region = np.zeros(shape, np.uint8)
    cv2.circle(region, (round(x * 16), round(y * 16)), round(r * 16), 1, cv2.FILLED, cv2.LINE_8, shift=4)
    return region.astype(bool)


def region_of(inst: Instance, shape: tuple[int, int], path: Path) -> np.ndarray:
    """The pixels one instance covers, (H, W) bool, after its checks."""
    if inst.kind == "polygon":
        return _polygon(check_polygon(inst.points, shape, inst, path), shape, inst.pixel_indices)
    if inst.kind == "circle":
        return _circle(inst, shape, path)
    if inst.kind == "rle":
        return _rle(inst.rle, shape, inst, path)
    if inst.kind == "bits":
        return _bits(inst, shape, path)
    raise ValueError(f"unknown instance kind {inst.kind!r}")


def label_map(instances: Iterable[Instance], shape: tuple[int, int], overlap: str, path: Path) -> np.ndarray:
    """Every instance filled into one (H, W) uint8 label map; overlaps go to the ``later`` / ``earlier`` class, and
    ignored regions (``IGNORE``) cover every class."""
    label = np.zeros(shape, np.uint8)
    ignored = np.zeros(shape, bool)
    for inst in instances:
        region = region_of(inst, shape, path)
        if inst.class_id == IGNORE:
            ignored |= region
            continue
        if inst.class_id == 0:
            continue  # a region named background adds nothing
        current = label[region]
        wins = (current == 0) | ((current < inst.class_id) if overlap == "later" else (current > inst.class_id))
        current[wins] = inst.class_id
        label[region] = current
    label[ignored] = IGNORE
    return label
