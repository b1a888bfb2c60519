"""COCO instances JSON: one file for the whole dataset, read into samples of drawn instances.

``discover_coco`` reads ``annotation.file`` (``images``, ``annotations``,
``categories``) and returns one ``Sample`` per listed image, its
``file_name`` under ``annotation.images``, with the image's instances
(``medseg.formats.instances``): each polygon of a ``segmentation`` list, or
its RLE, compressed (a string) or not (a list of counts), crowd regions
(``iscrowd``) included unless ``crowd: skip``. Categories map to classes by
name (``annotation.labels``). Problems name the JSON and the annotation:
an unknown category, an annotation whose ``image_id`` is not listed, a
listed image whose file is missing, an image without annotations (unless
``unannotated: background``); each one keeps its image out, and whether it
stops the stage is the caller's ``on_error``. The declared width and height
are checked against the file when the image is read.

``write_coco`` writes predicted regions (``medseg.formats.polygons``) as
such a file: polygons, and compressed RLE where a polygon cannot hold a
component; categories are the classes, by name.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from medseg.config import CocoAnnotation
from medseg.config.convert import IMAGE_EXTS
from medseg.io.errors import DataError
from medseg.io.images import display_path

from .instances import Instance, check_ignored_names, class_of, flat_points, read_json, unknown_label
from .polygons import Region
from .samples import Discovery, Sample, safe_id


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _categories(entries: list, path: Path) -> dict[int, str]:
    names: dict[int, str] = {}
    for c in entries:
        if not (isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str)):
            raise DataError(display_path(path), f"category {c!r}: needs an integer 'id' and a 'name'")
        if c["id"] in names:
            raise DataError(display_path(path), f"category id {c['id']} is listed twice")
        names[c["id"]] = c["name"]
    return names


def inside(root: Path, name: str) -> Path | None:
    """``root / name`` when it stays under ``root`` (no absolute path, no ``..`` out of it), else ``None``."""
    joined = Path(os.path.normpath(root / name))
    return joined if not Path(name).is_absolute() and joined.is_relative_to(os.path.normpath(root)) else None


def _images(entries: list, folder: Path, path: Path) -> dict[int, dict]:
    images: dict[int, dict] = {}
    for im in entries:
        if not (isinstance(im, dict) and _is_int(im.get("id")) and isinstance(im.get("file_name"), str)
                and _is_int(im.get("width")) and _is_int(im.get("height"))):
            raise DataError(display_path(path), f"image {im!r}: needs an integer 'id', 'width' and 'height' and a "
                                                "'file_name'")
        if im["id"] in images:
            raise DataError(display_path(path), f"image id {im['id']} is listed twice")
        images[im["id"]] = {**im, "file": inside(folder, im["file_name"])}
    return images


def _segmentation(a: dict, where: str, class_id: int) -> list[Instance]:
    seg = a.get("segmentation")
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        return [Instance(class_id, "rle", f"{where}, RLE", rle=seg)]
    if not isinstance(seg, list) or not seg:
        raise ValueError(f"{where}: no segmentation (a polygon list or an RLE); a box alone fills nothing")
    parts = []
    for k, part in enumerate(seg, start=1):
        points = flat_points(part, f"{where}, polygon {k}")
        parts.append(Instance(class_id, "polygon", f"{where}, polygon {k}", points=points))
    return parts


def _annotations(data: dict, images: dict[int, dict], categories: dict[int, str], ann: CocoAnnotation,
                 classes: list[str], path: Path, ignore: Sequence[str]) -> tuple[dict, dict, list[DataError], int]:
    """Instances per image id, the first problem per image id, problems without an image, crowd regions skipped."""
    found: dict[int, list[Instance]] = defaultdict(list)
    bad: dict[int, DataError] = {}
    orphans, skipped = [], 0
    for k, a in enumerate(data["annotations"]):
        aid = a.get("id", f"#{k}") if isinstance(a, dict) else f"#{k}"
        if not isinstance(a, dict) or not _is_int(a.get("image_id")):
            orphans.append(DataError(display_path(path), f"annotation {aid}: needs an integer 'image_id'"))
            continue
        image = images.get(a["image_id"])
        if image is None:
            orphans.append(DataError(display_path(path), f"annotation {aid}: image_id {a['image_id']} is not in "
                                                         "'images' (an annotation for a missing image)"))
            continue
        found.setdefault(a["image_id"], [])
        name = categories.get(a.get("category_id"))
        where = f"annotation {aid} (image {image['file_name']!r}, category {name!r})"
        class_id = class_of(name, ann.labels, classes, ignore)
        try:
            if name is None:
                raise ValueError(f"annotation {aid}: category_id {a.get('category_id')!r} is not in 'categories'")
            if class_id is None:
                raise ValueError(f"{where}: {unknown_label(name, ann.labels, classes)}")
            if a.get("iscrowd") and ann.crowd == "skip":
                skipped += 1
                continue
            found[a["image_id"]] += _segmentation(a, where, class_id)
        except ValueError as exc:
            bad.setdefault(a["image_id"], DataError(display_path(path), str(exc)))
    return found, bad, orphans, skipped


def discover_coco(root: Path, ann: CocoAnnotation, classes: list[str], ignore: Sequence[str] = ()) -> Discovery:
    """The samples of a COCO file; ``ignore``: category names whose regions are ignored pixels."""
    path = root / ann.file
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise DataError(display_path(path), "not a COCO instances file: expected an object with 'images', "
                                            "'annotations' and 'categories' lists")
    folder = root / ann.images
    images = _images(data["images"], folder, path)
    categories = _categories(data["categories"], path)
    check_ignored_names(ignore, categories.values(), path, "category")
    found, bad, problems, crowd = _annotations(data, images, categories, ann, classes, path, ignore)
    samples = []
    for image_id, im in sorted(images.items(), key=lambda kv: kv[1]["file_name"]):
        file, shown = im["file"], display_path(Path(ann.images) / im["file_name"])
        if image_id in bad:
            problems.append(bad[image_id])
        elif file is None or not file.is_file():
            problems.append(DataError(display_path(path), f"image {image_id} {im['file_name']!r}: no file {shown} "
                                                          "(an annotation for a missing image)"))
        elif image_id not in found and ann.unannotated == "error":
            problems.append(DataError(display_path(path), f"image {image_id} {im['file_name']!r}: no annotation "
                                                          "(annotation.unannotated: background takes it as all "
                                                          "background)"))
        else:
            samples.append(Sample(id=safe_id(file.stem), group="", image=file, annotation=path,
                                  instances=tuple(found.get(image_id, ())), declared_size=(im["width"], im["height"])))
    listed = {im["file"] for im in images.values()}
    unlisted = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p not in listed) \
        if folder.is_dir() else []
    notes = [f"{len(unlisted)} image file(s) in {ann.images} not in {ann.file}, not read: "
             f"{[display_path(p.relative_to(folder)) for p in unlisted[:3]]}"] if unlisted else []
    if crowd:
        notes.append(f"{crowd} crowd region(s) left out (annotation.crowd: skip)")
    return Discovery(samples, problems, notes)


# --------------------------------------------------------------------------- writing
def _annotation(k: int, image_id: int, region: Region, shape: tuple[int, int]) -> dict:
    if region.polygon is not None:
        (x0, y0), (x1, y1) = region.polygon.min(axis=0), region.polygon.max(axis=0)
        x, y = region.polygon[:, 0], region.polygon[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        segmentation: list | dict = [np.round(region.polygon, 3).ravel().tolist()]
        bbox = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
    else:
        full = np.zeros(shape, np.uint8)
        h, w = region.mask.shape
        full[region.top:region.top + h, region.left:region.left + w] = region.mask
        rle = coco_mask.encode(np.asfortranarray(full))
        segmentation = {"size": [shape[0], shape[1]], "counts": rle["counts"].decode("ascii")}
        area, bbox = float(region.mask.sum()), [region.left, region.top, w, h]
    return {"id": k, "image_id": image_id, "category_id": region.class_id, "segmentation": segmentation,
            "area": area, "bbox": bbox, "iscrowd": 0}


def write_coco(path: Path, images: Sequence[tuple[str, tuple[int, int], list[Region]]], classes: list[str]) -> None:
    """One COCO instances JSON: ``images`` holds (file name, (height, width), regions) per image."""
    listed, annotations = [], []
    for image_id, (name, shape, regions) in enumerate(images, start=1):
        listed.append({"id": image_id, "file_name": name, "width": shape[1], "height": shape[0]})
        for region in regions:
            annotations.append(_annotation(len(annotations) + 1, image_id, region, shape))
    categories = [{"id": k, "name": name, "supercategory": ""} for k, name in enumerate(classes) if k > 0]
    Path(path).write_text(json.dumps({"images": listed, "annotations": annotations, "categories": categories}))
