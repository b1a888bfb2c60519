"""Apply a trained model to new images of any size, or to a CT volume (the ``predict`` command).

The model is a checkpoint, or a model folder whose cross-validation rounds
predict together (``medseg.model.ensemble``).

``input_kind(source)`` tells the inputs apart: a folder holding images, a
NIfTI file or a DICOM series folder (a folder without images); a volume goes
to ``medseg.evaluate.predict_volume``. ``predict_folder(model, source,
output, device, max_pixels)`` writes, for
every image in ``source``: ``labels/<stem>.png`` (uint8 class indices at the
image's own resolution), ``overlays/<stem>.png`` (the prediction drawn on the
image) and ``findings.csv`` (foreground area per class in pixels and as a
fraction of the image, and the predicted image-level class). With ``fmt``
other than ``png`` it also writes the predictions as pre-annotations to
open and correct in a tool (``PRE_ANNOTATIONS``): ``coco.json``,
``cvat.xml``, or ``labelme/<stem>.json`` (``imagePath`` relative to it),
each component a polygon simplified within ``tolerance`` pixels, or a mask
where a polygon cannot hold it (``medseg.formats.polygons``); convert reads
them back. The output folder appears only when every image was processed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from medseg.config.convert import IMAGE_EXTS
from medseg.export.engine import TORCH, load_ensemble_on
from medseg.figures.overlay import overlay
from medseg.formats.coco import write_coco
from medseg.formats.cvat import write_cvat
from medseg.formats.labelme import write_labelme
from medseg.formats.polygons import regions
from medseg.formats.samples import safe_id
from medseg.io.atomic import atomic_dir
from medseg.io.errors import DataError
from medseg.io.images import display_path, read_image, write_png
from medseg.model.ensemble import ensemble_labels
from medseg.model.runtime import pick_device
from medseg.volumes.nifti import NIFTI_SUFFIXES

from .scoring import predicted_image_class

FINDINGS = "findings.csv"
# What --format adds to the label PNGs: the file (or folder) of pre-annotations of each tool's format.
PRE_ANNOTATIONS = {"coco": "coco.json", "cvat": "cvat.xml", "labelme": "labelme"}
FORMATS = ("png", *PRE_ANNOTATIONS)


def input_kind(source: Path) -> Literal["images", "nifti", "dicom"]:
    """What ``source`` holds: a folder of images, a NIfTI file, or (a folder without images) a DICOM series."""
    source = Path(source)
    if source.is_file():
        if not source.name.lower().endswith(NIFTI_SUFFIXES):
            raise DataError(source, f"not a NIfTI volume ({', '.join(NIFTI_SUFFIXES)}); give a NIfTI file, a DICOM "
                                    "series folder or a folder of images")
        return "nifti"
    if not source.is_dir():
        raise DataError(source, "input folder not found")
    has_images = any(p.is_file() and p.suffix.lower() in IMAGE_EXTS for p in source.iterdir())
    return "images" if has_images else "dicom"


def list_images(folder: Path) -> list[Path]:
    """The images in ``folder``, sorted; ``DataError`` when there are none or two map to one output name."""
    if not folder.is_dir():
        raise DataError(folder, "input folder not found")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not images:
        raise DataError(folder, f"no images ({', '.join(sorted(IMAGE_EXTS))}) in this folder")
    names: dict[str, Path] = {}
    for path in images:
        name = safe_id(path.stem)
        if name in names:
            raise DataError(path, f"output name {name!r} clashes with {display_path(names[name].name)}")
        names[name] = path
    return images


def findings(name: str, source: Path, label: np.ndarray, classes: list[str], vocabulary: list[str]) -> dict:
    """One row of ``findings.csv``."""
    total = label.size
    pixels = {c: int((label == i).sum()) for i, c in enumerate(classes) if i > 0}
    return {"file": display_path(source.name), "output": name, "height": label.shape[0], "width": label.shape[1],
            **{f"px_{c}": n for c, n in pixels.items()},
            **{f"frac_{c}": round(n / total, 6) for c, n in pixels.items()},
            "predicted_class": predicted_image_class(pixels, vocabulary)}


def predict_folder(model_path: Path, source: Path, output: Path, device_name: str, max_pixels: int,
                   fmt: str = "png", tolerance: float = 0.5, engine: str = TORCH) -> pd.DataFrame:
    """Segment every image in ``source`` into ``output`` (pre-annotations too, unless ``fmt`` is ``png``); return
    the findings table. ``engine``: what runs the network (``medseg.export.engine``)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    device = pick_device(device_name)
    ckpt = load_ensemble_on(model_path, device, engine)
    vocabulary = list(ckpt.info.get("image_classes", []))
    rows, drawn = [], []
    with atomic_dir(output) as out:
        (out / "labels").mkdir()
        (out / "overlays").mkdir()
        if fmt == "labelme":
            (out / PRE_ANNOTATIONS[fmt]).mkdir()
        for path in list_images(source):
            image = read_image(path, ckpt.channels, max_pixels)
            label = ensemble_labels(ckpt, image, device)
            name = safe_id(path.stem)
            write_png(out / "labels" / f"{name}.png", label)
            write_png(out / "overlays" / f"{name}.png", overlay(image, label))
            rows.append(findings(name, path, label, ckpt.classes, vocabulary))
            if fmt == "labelme":
                # imagePath as seen from where the JSON will be once the output folder is in place
                relative = os.path.relpath(Path(path).resolve(), (Path(output) / PRE_ANNOTATIONS[fmt]).resolve())
                write_labelme(out / PRE_ANNOTATIONS[fmt] / f"{name}.json", relative, label.shape,
                              regions(label, tolerance, "indices"), ckpt.classes)
            elif fmt != "png":
                drawn.append((path.name, label.shape, regions(label, tolerance, "continuous")))
        writer = {"coco": write_coco, "cvat": write_cvat}.get(fmt)
        if writer is not None:
            writer(out / PRE_ANNOTATIONS[fmt], drawn, ckpt.classes)
        table = pd.DataFrame(rows)
        table.to_csv(out / FINDINGS, index=False)
    return table
