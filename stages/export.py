"""Export a trained checkpoint's network as ONNX and TorchScript (a command, not a DVC stage).

    python stages/export.py --model models/synthetic/model.pt --output exported/synthetic/

Writes ``model.onnx`` (batch size dynamic), ``model.ts`` (traced
TorchScript) and ``export.json`` (classes, channels, canvas, window,
post-processing: what a runtime needs around the graph) into --output; see
``medseg.model.export`` for what the graph takes and returns. With
``--check``, also runs both exports on a random batch and fails unless their
logits are within 1e-4 of PyTorch's (ONNX needs onnxruntime for that).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from medseg.export.graph import example_input, export_all, onnx_logits, onnx_session
from medseg.io.cli import setup_logging
from medseg.io.errors import DataError
from medseg.model.checkpoint import load_checkpoint

log = logging.getLogger("export")
TOLERANCE = 1e-4


def check(ckpt, files: dict[str, Path]) -> dict[str, float]:
    """Largest absolute logit difference of each export from PyTorch on a random batch of 2."""
    x = example_input(ckpt, batch=2, seed=1)
    with torch.no_grad():
        reference = ckpt.model(x).numpy()
        scripted = torch.jit.load(str(files["torchscript"]))(x).numpy()
    onnx = onnx_logits(onnx_session(files["onnx"]), x.numpy())
    return {"torchscript": float(np.abs(scripted - reference).max()), "onnx": float(np.abs(onnx - reference).max())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export a checkpoint as ONNX and TorchScript.")
    parser.add_argument("--model", type=Path, required=True, help="checkpoint, e.g. models/synthetic/model.pt")
    parser.add_argument("--output", type=Path, required=True, help="folder for model.onnx, model.ts, export.json")
    parser.add_argument("--check", action="store_true", help=f"fail unless both match PyTorch within {TOLERANCE}")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        ckpt = load_checkpoint(args.model, "cpu")
    except DataError as exc:
        log.error("%s", exc)
        sys.exit(1)
    files = export_all(ckpt, args.output)
    log.info("%s -> %s", args.model, ", ".join(str(p) for p in files.values()))
    if args.check:
        errors = check(ckpt, files)
        log.info("largest logit difference from PyTorch: %s", errors)
        if max(errors.values()) > TOLERANCE:
            log.error("an export differs from PyTorch by more than %g: %s", TOLERANCE, errors)
            sys.exit(1)


if __name__ == "__main__":
    main()
