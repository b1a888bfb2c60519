"""LabelMe: one JSON per image, read into samples of drawn instances.

``discover_labelme`` reads every ``*.json`` of ``annotation.folder``. Its
``imagePath`` is resolved relative to the JSON (Windows separators too) and
must stay inside the dataset; when that file is missing, the image embedded
in ``imageData`` (base64) is read instead. Shapes: ``polygon``,
``rectangle`` (two corners), ``circle`` (centre, then a point on it) and
``mask`` (a base64 PNG over the box of its two corner pixels) are filled
as LabelMe draws them (points are pixel indices, boundary included;
``medseg.formats.instances``); ``line``, ``linestrip``, ``point`` and
``points`` fill nothing and are an error unless ``unfillable: ignore``; any
other type is an error. With ``annotation.images`` set, an image file there
that no JSON names is unannotated (an error, or all background). Every
problem names the JSON (or the image) and the shape.

``write_labelme`` writes predicted regions (``medseg.formats.polygons``) as
one such JSON per image: polygons, and mask shapes where a polygon cannot
hold a component; ``imagePath`` points at the image, no ``imageData``.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from medseg.config import LabelmeAnnotation
from medseg.config.convert import IMAGE_EXTS
from medseg.io.errors import DataError
from medseg.io.images import display_path

from .instances import Instance, check_ignored_names, class_of, flat_points, read_json, unknown_label
from .polygons import Region
from .samples import Discovery, Sample, safe_id

UNFILLABLE = ("line", "linestrip", "point", "points")
_NO_ANNOTATION = "(annotation.unannotated: background takes it as all background)"


def _shape(k: int, shape: object, ann: LabelmeAnnotation, classes: list[str], ignore: Sequence[str],
           ) -> Instance | str:
    """The instance of one shape, or the name of its type when it fills nothing and params say ignore."""
    if not isinstance(shape, dict):
        raise ValueError(f"shape {k}: not an object")
    label, kind = shape.get("label"), shape.get("shape_type") or "polygon"
    where = f"shape {k} ({label!r}, {kind})"
    class_id = class_of(label, ann.labels, classes, ignore)
    if class_id is None:
        raise ValueError(f"{where}: {unknown_label(label, ann.labels, classes)}")
    if kind in UNFILLABLE:
        if ann.unfillable == "ignore":
            return kind
        raise ValueError(f"{where}: a {kind} encloses no pixels (annotation.unfillable: ignore leaves it out)")
    points = flat_points(shape.get("points"), where)
    if kind == "polygon":
        return Instance(class_id, "polygon", where, points=points, pixel_indices=True)
    if kind in ("rectangle", "circle", "mask") and len(points) != 2:
        raise ValueError(f"{where}: needs 2 points, has {len(points)}")
    if kind == "rectangle":
        (x1, y1), (x2, y2) = points
        corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
        return Instance(class_id, "polygon", where, points=corners, pixel_indices=True)
    if kind == "circle":
        return Instance(class_id, "circle", where, points=points[:1], pixel_indices=True,
                        radius=float(np.hypot(*(points[1] - points[0]))))
    if kind == "mask":
        return _mask(shape, points, where, class_id)
    raise ValueError(f"{where}: shape type {kind!r} is not read (polygon, rectangle, circle, mask; "
                     f"{', '.join(UNFILLABLE)} with unfillable: ignore)")


def _mask(shape: dict, points: np.ndarray, where: str, class_id: int) -> Instance:
    """A ``mask`` shape: a base64 PNG over the box between its two corner pixels (both included)."""
    (x1, y1), (x2, y2) = points.astype(int)
    try:
        bits = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape.get("mask") or "", validate=True)))) > 0
    except (binascii.Error, OSError, ValueError) as exc:
        raise ValueError(f"{where}: malformed mask: not a base64 PNG ({exc})") from None
    if bits.ndim != 2 or bits.shape != (y2 - y1 + 1, x2 - x1 + 1):
        raise ValueError(f"{where}: malformed mask: {bits.shape[1]}x{bits.shape[0]} pixels for a box of "
                         f"{x2 - x1 + 1}x{y2 - y1 + 1}")
    return Instance(class_id, "bits", where, bits=bits, left=int(x1), top=int(y1))


def _image(path: Path, data: dict, root: Path) -> tuple[Path, bytes | None]:
    """The image file a JSON names, or its embedded bytes when the file is missing."""
    named = data.get("imagePath")
    image = None
    if isinstance(named, str) and named:
        image = Path(os.path.normpath(path.parent / named.replace("\\", "/")))
        if not image.is_relative_to(os.path.normpath(root)):
            raise DataError(display_path(path), f"imagePath {named!r} points outside the dataset")
        if image.is_file():
            return image, None
    embedded = data.get("imageData")
    if not isinstance(embedded, str) or not embedded:
        raise DataError(display_path(path), f"imagePath {named!r}: no such file and no imageData embedded "
                                            "(an annotation for a missing image)")
    try:
        return image or path, base64.b64decode(embedded, validate=True)
    except binascii.Error as exc:
        raise DataError(display_path(path), f"imageData is not base64 ({exc})") from None


def _read(path: Path, root: Path, ann: LabelmeAnnotation, classes: list[str], ignored: Counter,
          named: set[Path], ignore: Sequence[str] = (), seen: set[str] | None = None) -> Sample:
    """One JSON's sample; ``named`` collects the image it names, also when a shape then turns out bad."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DataError(display_path(path), "not a LabelMe file: expected an object with a 'shapes' list")
    image, embedded = _image(path, data, root)
    named.add(image)
    instances = []
    for k, shape in enumerate(data["shapes"], start=1):
        if seen is not None and isinstance(shape, dict) and isinstance(shape.get("label"), str):
            seen.add(shape["label"])
        try:
            made = _shape(k, shape, ann, classes, ignore)
        except ValueError as exc:
            raise DataError(display_path(path), str(exc)) from None
        if isinstance(made, str):
            ignored[made] += 1
        else:
            instances.append(made)
    if not instances and ann.unannotated == "error":
        raise DataError(display_path(path), f"no shape to fill {_NO_ANNOTATION}")
    w, h = data.get("imageWidth"), data.get("imageHeight")
    declared = (w, h) if all(isinstance(v, int) and not isinstance(v, bool) for v in (w, h)) else None
    return Sample(id=safe_id(image.stem), group="", image=image, annotation=path, instances=tuple(instances),
                  declared_size=declared, image_data=embedded)


def discover_labelme(root: Path, ann: LabelmeAnnotation, classes: list[str], ignore: Sequence[str] = (),
                     ) -> Discovery:
    """The samples of a folder of LabelMe JSONs; ``ignore``: label names whose shapes are ignored pixels."""
    folder = root / ann.folder
    if not folder.is_dir():
        raise DataError(display_path(folder), "folder not found (the dataset's annotation.folder)")
    samples, problems, ignored, named, seen = [], [], Counter(), set(), set()
    for path in sorted(folder.glob("*.json")):
        try:
            samples.append(_read(path, root, ann, classes, ignored, named, ignore, seen))
        except DataError as exc:
            problems.append(exc)
    check_ignored_names(ignore, seen, folder, "shape label")
    notes = [f"{n} {kind} shape(s) left out (annotation.unfillable: ignore)" for kind, n in sorted(ignored.items())]
    if ann.images:
        images = root / ann.images
        if not images.is_dir():
            raise DataError(display_path(images), "folder not found (the dataset's annotation.images)")
        for image in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTS):
            if image in named:
                continue
            if ann.unannotated == "error":
                problems.append(DataError(display_path(image), f"no LabelMe JSON names this image {_NO_ANNOTATION}"))
            else:
                samples.append(Sample(id=safe_id(image.stem), group="", image=image))
    return Discovery(samples, problems, notes)


# --------------------------------------------------------------------------- writing
def _png_base64(bits: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(bits.astype(np.uint8) * 255).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _shape_of(region: Region, classes: list[str]) -> dict:
    shape = {"label": classes[region.class_id], "group_id": None, "description": "", "flags": {}}
    if region.polygon is not None:
        return {**shape, "points": np.round(region.polygon, 3).tolist(), "shape_type": "polygon"}
    h, w = region.mask.shape
    return {**shape, "points": [[region.left, region.top], [region.left + w - 1, region.top + h - 1]],
            "shape_type": "mask", "mask": _png_base64(region.mask)}


def write_labelme(path: Path, image_path: str, shape: tuple[int, int], regions: list[Region],
                  classes: list[str]) -> None:
    """One LabelMe JSON at ``path`` for the image at ``image_path`` (relative to the JSON), (h, w) ``shape``."""
    data = {"version": "5.4.1", "flags": {}, "shapes": [_shape_of(r, classes) for r in regions],
            "imagePath": image_path, "imageData": None,
            "imageHeight": shape[0], "imageWidth": shape[1]}
    Path(path).write_text(json.dumps(data, indent=1))
