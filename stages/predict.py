"""Apply a trained checkpoint to a folder of images or to a CT volume (a command, not a DVC stage).

    python stages/predict.py --model models/synthetic/model.pt --input scans/ --output predictions/
    python stages/predict.py --model models/synthetic/model.pt --input scans/ --output pre/ --format cvat
    python stages/predict.py --model models/msd-liver/model.pt --input ct.nii.gz --output ct_pred/
    python stages/predict.py --model models/ircadb-liver-ct/model.pt --input PATIENT_DICOM/ --output pred/

For a folder of images, writes for every image in --input (any size):
``labels/<stem>.png`` (uint8 class indices at the image's own resolution),
``overlays/<stem>.png`` (the prediction drawn on the image) and
``findings.csv`` (foreground area per class in pixels and as a fraction of
the image, and the predicted image-level class; ``medseg.evaluate.predict``);
with ``--format coco|labelme|cvat`` also the predictions as pre-annotations
for that tool (polygons simplified within ``--tolerance`` pixels), which
convert reads back.
For a NIfTI file or a DICOM series folder (a folder without images), with a
model trained on a dataset sliced from volumes: ``<name>.nii.gz``, the label
volume on the input's own grid (shape and affine), ``overlays/`` of the
slices with most foreground and ``findings.csv`` (voxels and millilitres per
class; ``medseg.evaluate.predict_volume``). The output folder appears only
when everything was written.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from medseg.evaluate.predict import FORMATS, input_kind, predict_folder
from medseg.evaluate.predict_volume import OVERLAYS, predict_volume
from medseg.export.engine import ENGINES, ONNXRUNTIME, TORCH
from medseg.io.cli import setup_logging
from medseg.io.errors import DataError
from medseg.model.runtime import pick_device

log = logging.getLogger("predict")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Segment a folder of images, or a CT volume, with a trained "
                                                 "checkpoint.")
    parser.add_argument("--model", type=Path, required=True, help="checkpoint, e.g. models/synthetic/model.pt")
    parser.add_argument("--input", type=Path, required=True,
                        help="folder of images, NIfTI file (.nii, .nii.gz) or DICOM series folder")
    parser.add_argument("--output", type=Path, required=True, help="folder to create (replaced if present)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-pixels", type=int, default=40_000_000, help="refuse larger images")
    parser.add_argument("--overlays", type=int, default=OVERLAYS, help="a volume: overlays of this many slices")
    parser.add_argument("--format", default="png", choices=FORMATS,
                        help="images: also write the predictions as pre-annotations for this tool")
    parser.add_argument("--engine", default=TORCH, choices=ENGINES,
                        help="what runs the network: PyTorch, or ONNX Runtime on its export (CPU; exported once "
                             "per checkpoint into $MEDSEG_CACHE_DIR, default ~/.cache/medseg)")
    parser.add_argument("--tolerance", type=float, default=0.5,
                        help="--format: how far (pixels) a simplified polygon may leave the predicted outline")
    args = parser.parse_args(argv)
    if args.engine == ONNXRUNTIME and pick_device(args.device).type != "cpu":
        parser.error(f"--engine {ONNXRUNTIME} runs on the CPU: add --device cpu, or use --engine {TORCH}")
    setup_logging()
    try:
        if input_kind(args.input) == "images":
            table = predict_folder(args.model, args.input, args.output, args.device, args.max_pixels,
                                   args.format, args.tolerance, args.engine)
            log.info("%d images -> %s; predicted classes: %s", len(table), args.output,
                     table["predicted_class"].value_counts().to_dict())
        else:
            if args.format != "png":
                parser.error("--format applies to a folder of images, not to a volume")
            table = predict_volume(args.model, args.input, args.output, args.device, args.overlays, args.engine)
            row = table.iloc[0]
            log.info("%s (%s voxels) -> %s; %s", row["file"], row["shape"], args.output / row["output"],
                     {c[3:]: f"{row[c]} mL" for c in table.columns if c.startswith("ml_")})
    except DataError as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
