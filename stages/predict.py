"""Apply a trained checkpoint to a folder of images (a command, not a DVC stage).

    python stages/predict.py --model models/synthetic/model.pt --input scans/ --output predictions/

Writes, for every image in --input (any size): ``labels/<stem>.png`` (uint8
class indices at the image's own resolution), ``overlays/<stem>.png`` (the
prediction drawn on the image) and ``findings.csv`` (foreground area per
class in pixels and as a fraction of the image, and the predicted image-level
class). The output folder appears only when every image was processed
(``medseg.evaluate.predict``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from medseg.evaluate.predict import predict_folder
from medseg.io.cli import setup_logging
from medseg.io.errors import DataError

log = logging.getLogger("predict")


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
