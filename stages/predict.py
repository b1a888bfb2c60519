"""Apply a trained checkpoint to a folder of images (a command, not a DVC stage).

    python stages/predict.py --model models/synthetic/model.pt --input scans/ --output predictions/

Writes, for every image in --input (any size): ``labels/<stem>.png`` (uint8
class indices at the image's own resolution), ``overlays/<stem>.png`` (the
prediction drawn on the image) and ``findings.csv`` (foreground area per
class in pixels and as a fraction of the image, and the predicted image-level
class). The output folder appears only when every image was processed.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from medseg.atomic import atomic_dir
from medseg.checkpoint import load_checkpoint
from medseg.cli import setup_logging
from medseg.discover import safe_id
from medseg.errors import DataError
from medseg.evaluation import predict_native, predicted_image_class
from medseg.imageio import display_path, read_image, write_png
from medseg.training import pick_device
from medseg.visualize import overlay

log = logging.getLogger("predict")
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def list_images(folder: Path) -> list[Path]:
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


def findings(name: str, source: Path, label, classes: list[str], vocabulary: list[str]) -> dict:
    total = label.size
    pixels = {c: int((label == i).sum()) for i, c in enumerate(classes) if i > 0}
    return {"file": display_path(source.name), "output": name, "height": label.shape[0], "width": label.shape[1],
            **{f"px_{c}": n for c, n in pixels.items()},
            **{f"frac_{c}": round(n / total, 6) for c, n in pixels.items()},
            "predicted_class": predicted_image_class(pixels, vocabulary)}


def predict_folder(model_path: Path, source: Path, output: Path, device_name: str, max_pixels: int) -> pd.DataFrame:
    device = pick_device(device_name)
    ckpt = load_checkpoint(model_path, device)
    vocabulary = list(ckpt.info.get("image_classes", []))
    rows = []
    with atomic_dir(output) as out:
        (out / "labels").mkdir()
        (out / "overlays").mkdir()
        for path in list_images(source):
            image = read_image(path, ckpt.channels, max_pixels)
            label = predict_native(ckpt.model, image, ckpt.size, device)
            name = safe_id(path.stem)
            write_png(out / "labels" / f"{name}.png", label)
            write_png(out / "overlays" / f"{name}.png", overlay(image, label))
            rows.append(findings(name, path, label, ckpt.classes, vocabulary))
        table = pd.DataFrame(rows)
        table.to_csv(out / "findings.csv", index=False)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Segment a folder of images with a trained checkpoint.")
    parser.add_argument("--model", type=Path, required=True, help="checkpoint, e.g. models/synthetic/model.pt")
    parser.add_argument("--input", type=Path, required=True, help="folder of images")
    parser.add_argument("--output", type=Path, required=True, help="folder to create (replaced if present)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-pixels", type=int, default=40_000_000, help="refuse larger images")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        table = predict_folder(args.model, args.input, args.output, args.device, args.max_pixels)
    except DataError as exc:
        log.error("%s", exc)
        sys.exit(1)
    log.info("%d images -> %s; predicted classes: %s", len(table), args.output,
             table["predicted_class"].value_counts().to_dict())


if __name__ == "__main__":
    main()
