"""CVAT for images 1.1 XML, read into samples of drawn instances.

``discover_cvat`` reads ``annotation.file``: each ``<image name width
height>`` (``name`` under ``annotation.images``; the declared size is
checked against the file when the image is read) and its shapes, on the
continuous image plane (``medseg.formats.instances``):

- ``<polygon points="x1,y1;x2,y2;...">``;
- ``<box xtl ytl xbr ybr rotation>``, turned by ``rotation`` degrees
  (clockwise on screen) about its centre;
- ``<ellipse cx cy rx ry rotation>``, as a 64-point polygon;
- ``<mask rle left top width height>``: CVAT's RLE, run lengths of
  alternating 0 and 1 (background first) over the box, row by row; the runs
  must add up to the box.

``<polyline>`` and ``<points>`` fill nothing: an error unless
``unfillable: ignore``. ``<tag>`` is image-level and not a region. A
CVAT-for-video file (``<track>``) is refused. Problems name the XML, the
image and the shape.

``write_cvat`` writes predicted regions (``medseg.formats.polygons``) as
such a file: polygons, and masks where a polygon cannot hold a component,
with the classes as the task's labels.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.config import CvatAnnotation
from medseg.io.errors import DataError
from medseg.io.images import display_path

from .coco import inside
from .instances import Instance, check_ignored_names, class_of, unknown_label
from .polygons import Region
from .samples import Discovery, Sample, safe_id

UNFILLABLE = ("polyline", "points")
_ELLIPSE_POINTS = 64


def _number(el: ET.Element, name: str, where: str) -> float:
    try:
        value = float(el.attrib[name])
    except KeyError:
        raise ValueError(f"{where}: no {name!r} attribute") from None
    except ValueError:
        raise ValueError(f"{where}: {name}={el.attrib[name]!r} is not a number") from None
    if not np.isfinite(value):
        raise ValueError(f"{where}: {name}={el.attrib[name]!r} is not finite")
    return value


def _integer(el: ET.Element, name: str, where: str) -> int:
    value = _number(el, name, where)
    if value != int(value) or value < 0:
        raise ValueError(f"{where}: {name}={el.attrib[name]!r} is not a whole number >= 0")
    return int(value)


def _turned(points: np.ndarray, centre: np.ndarray, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (points - centre) @ turn.T + centre


def _polygon(el: ET.Element, where: str) -> np.ndarray:
    try:
        return np.array([[float(c) for c in pair.split(",")] for pair in el.attrib["points"].split(";")])
    except KeyError:
        raise ValueError(f"{where}: no 'points' attribute") from None
    except ValueError:
        raise ValueError(f"{where}: points {el.attrib['points'][:60]!r} are not 'x,y;x,y;...' numbers") from None


def _box(el: ET.Element, where: str) -> np.ndarray:
    x1, y1, x2, y2 = (_number(el, k, where) for k in ("xtl", "ytl", "xbr", "ybr"))
    corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    rotation = float(el.attrib.get("rotation", 0) or 0)
    return _turned(corners, corners.mean(axis=0), rotation) if rotation else corners


def _ellipse(el: ET.Element, where: str) -> np.ndarray:
    cx, cy, rx, ry = (_number(el, k, where) for k in ("cx", "cy", "rx", "ry"))
    t = np.linspace(0, 2 * np.pi, _ELLIPSE_POINTS, endpoint=False)
    points = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)
    return _turned(points, np.array([cx, cy]), float(el.attrib.get("rotation", 0) or 0))


def _mask(el: ET.Element, where: str, class_id: int) -> Instance:
    left, top, width, height = (_integer(el, k, where) for k in ("left", "top", "width", "height"))
    try:
        counts = [int(c) for c in el.attrib.get("rle", "").split(",")]
    except ValueError:
        raise ValueError(f"{where}: malformed RLE: {el.attrib.get('rle', '')[:60]!r} is not comma-separated "
                         "run lengths") from None
    if any(c < 0 for c in counts):
        raise ValueError(f"{where}: malformed RLE: a negative run length")
    if sum(counts) != width * height:
        raise ValueError(f"{where}: malformed RLE: runs add up to {sum(counts)} pixels, not the box's "
                         f"{width}x{height} = {width * height}")
    bits = np.repeat(np.arange(len(counts)) % 2 == 1, counts).reshape(height, width)
    return Instance(class_id, "bits", where, bits=bits, left=left, top=top)


_READERS = {"polygon": _polygon, "box": _box, "ellipse": _ellipse}


def _instances(image: ET.Element, name: str, ann: CvatAnnotation, classes: list[str],
               ignored: Counter, ignore: Sequence[str]) -> list[Instance]:
    found = []
    for k, el in enumerate(image, start=1):
        if el.tag == "tag":
            continue
        label = el.attrib.get("label")
        where = f"image {name!r}, {el.tag} {k} ({label!r})"
        class_id = class_of(label, ann.labels, classes, ignore)
        if class_id is None:
            raise ValueError(f"{where}: {unknown_label(label, ann.labels, classes)}")
        if el.tag in UNFILLABLE:
            if ann.unfillable == "error":
                raise ValueError(f"{where}: a {el.tag} encloses no pixels (annotation.unfillable: ignore leaves "
                                 "it out)")
            ignored[el.tag] += 1
        elif el.tag == "mask":
            found.append(_mask(el, where, class_id))
        elif el.tag in _READERS:
            found.append(Instance(class_id, "polygon", where, points=_READERS[el.tag](el, where)))
        else:
            raise ValueError(f"{where}: <{el.tag}> is not read (polygon, box, ellipse, mask; "
                             f"{', '.join(UNFILLABLE)} with unfillable: ignore)")
    return found


def _parse(path: Path) -> ET.Element:
    try:
        top = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DataError(display_path(path), "annotation file not found") from None
    except ET.ParseError as exc:
        raise DataError(display_path(path), f"XML does not parse: {exc}") from None
    if top.tag != "annotations":
        raise DataError(display_path(path), f"not a CVAT XML: the root element is <{top.tag}>, not <annotations>")
    if top.find("track") is not None:
        raise DataError(display_path(path), "<track> elements: this is CVAT for video; export the task as "
                                            "'CVAT for images 1.1'")
    return top


def discover_cvat(root: Path, ann: CvatAnnotation, classes: list[str], ignore: Sequence[str] = ()) -> Discovery:
    """The samples of a CVAT XML; ``ignore``: label names whose shapes are ignored pixels."""
    path = root / ann.file
    top = _parse(path)
    if ignore:
        listed = [el.text or "" for el in top.iterfind("meta/*/labels/label/name")]
        used = {el.attrib.get("label", "") for image in top.iter("image") for el in image}
        check_ignored_names(ignore, listed or used, path, "label")
    samples, problems, ignored = [], [], Counter()
    for image in top.iter("image"):
        name = image.attrib.get("name", "")
        try:
            size = tuple(_integer(image, k, f"image {name!r}") for k in ("width", "height"))
            instances = _instances(image, name, ann, classes, ignored, ignore)
        except ValueError as exc:
            problems.append(DataError(display_path(path), str(exc)))
            continue
        file = inside(root / ann.images, name) if name else None
        if file is None or not file.is_file():
            problems.append(DataError(display_path(path), f"image {name!r}: no file "
                                                          f"{display_path(Path(ann.images) / name)} (an annotation "
                                                          "for a missing image)"))
        elif not instances and ann.unannotated == "error":
            problems.append(DataError(display_path(path), f"image {name!r}: no annotation (annotation.unannotated: "
                                                          "background takes it as all background)"))
        else:
            samples.append(Sample(id=safe_id(file.stem), group="", image=file, annotation=path,
                                  instances=tuple(instances), declared_size=size))
    version = (top.findtext("version") or "").strip()
    notes = [f"CVAT XML version {version!r}; read as 1.1"] if version and version != "1.1" else []
    notes += [f"{n} {kind} shape(s) left out (annotation.unfillable: ignore)" for kind, n in sorted(ignored.items())]
    return Discovery(sorted(samples, key=lambda s: s.id), problems, notes)


# --------------------------------------------------------------------------- writing
def _runs(bits: np.ndarray) -> str:
    """CVAT's RLE of a box: run lengths of alternating 0 and 1, row by row, starting with 0."""
    flat = bits.ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    lengths = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ", ".join(map(str, lengths if flat[0] == 0 else [0, *lengths]))


def _element(region: Region, classes: list[str]) -> ET.Element:
    common = {"label": classes[region.class_id], "source": "auto", "occluded": "0", "z_order": "0"}
    if region.polygon is not None:
        points = ";".join(f"{x:.3f},{y:.3f}" for x, y in region.polygon)
        return ET.Element("polygon", {**common, "points": points})
    h, w = region.mask.shape
    return ET.Element("mask", {**common, "rle": _runs(region.mask), "left": str(region.left),
                               "top": str(region.top), "width": str(w), "height": str(h)})


def write_cvat(path: Path, images: list[tuple[str, tuple[int, int], list[Region]]], classes: list[str]) -> None:
    """A CVAT for images 1.1 XML: ``images`` holds (name, (height, width), regions) per image."""
    top = ET.Element("annotations")
    ET.SubElement(top, "version").text = "1.1"
    labels = ET.SubElement(ET.SubElement(ET.SubElement(top, "meta"), "task"), "labels")
    for name in classes[1:]:
        ET.SubElement(ET.SubElement(labels, "label"), "name").text = name
    for k, (name, shape, regions) in enumerate(images):
        image = ET.SubElement(top, "image", {"id": str(k), "name": name, "width": str(shape[1]),
                                             "height": str(shape[0])})
        image.extend(_element(r, classes) for r in regions)
    ET.indent(top)
    ET.ElementTree(top).write(path, encoding="utf-8", xml_declaration=True)
