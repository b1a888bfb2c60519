"""A checkpoint's network as ONNX and TorchScript, for runtimes without this project (the ``export`` command).

The exported graph is the network alone: float32 ``(N, channels, H, W)`` in
[0, 1] -> float32 logits ``(N, classes, H, W)``, with the batch size free and
``(H, W)`` the input the network gets at inference (``input_size``): the
checkpoint's canvas, or its sliding window when it was trained on patches.
The network pads that to a multiple of its stride and crops the logits back
inside the graph, as in PyTorch. Fitting an image onto the canvas
(``medseg.data.preprocess``), the window, flip TTA and turning logits into
labels stay outside; ``export.json`` beside the files records what they
need (classes, channels, canvas, window, post-processing). ONNX export uses
torch's exporter (onnx, onnxscript); running it needs onnxruntime, imported
only by ``onnx_session``.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from medseg.io.atomic import atomic_file
from medseg.model.checkpoint import Checkpoint

log = logging.getLogger(__name__)

ONNX_FILE, TORCHSCRIPT_FILE, METADATA_FILE = "model.onnx", "model.ts", "export.json"
INPUT_NAME, OUTPUT_NAME = "images", "logits"
OPSET = 18


def input_size(ckpt: Checkpoint) -> tuple[int, int]:
    """(H, W) the network sees at inference: the sliding window when there is one, else the canvas."""
    return tuple(ckpt.window) if ckpt.window is not None else tuple(ckpt.size)


def example_input(ckpt: Checkpoint, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A reproducible random batch of the exported input's shape."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((batch, ckpt.channels, *input_size(ckpt)), generator=generator)


def export_torchscript(ckpt: Checkpoint, path: Path) -> Path:
    """Trace the network on the CPU at ``input_size`` (the batch size stays free) and save it to ``path``."""
    model = ckpt.model.cpu().eval()
    with warnings.catch_warnings():
        # The only Python branch is the pad for a size the trace fixes anyway.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example_input(ckpt))
    with atomic_file(path, "wb") as fh:
        torch.jit.save(traced, fh)
    return path


def export_onnx(ckpt: Checkpoint, path: Path, opset: int = OPSET) -> Path:
    """Export the network with torch's ONNX exporter, batch size dynamic, to ``path``."""
    model = ckpt.model.cpu().eval()
    program = torch.onnx.export(model, (example_input(ckpt),), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset, dynamo=True,
                                verbose=False)
    with atomic_file(path, "wb") as fh:
        fh.write(program.model_proto.SerializeToString())
    return path


def metadata(ckpt: Checkpoint, opset: int = OPSET) -> dict:
    """What a runtime needs around the graph: the model-input contract and how logits become labels."""
    return {"input": {"name": INPUT_NAME, "shape": ["N", ckpt.channels, *input_size(ckpt)], "dtype": "float32",
                      "scale": "pixels / 255"},
            "output": {"name": OUTPUT_NAME, "shape": ["N", len(ckpt.classes), *input_size(ckpt)]},
            "classes": ckpt.classes, "canvas": list(ckpt.size),
            "window": None if ckpt.window is None else list(ckpt.window),
            "postprocess": ckpt.postprocess.to_dict(), "onnx_opset": opset}


def export_all(ckpt: Checkpoint, output: Path) -> dict[str, Path]:
    """``model.onnx``, ``model.ts`` and ``export.json`` in ``output``; their paths."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    files = {"onnx": export_onnx(ckpt, output / ONNX_FILE),
             "torchscript": export_torchscript(ckpt, output / TORCHSCRIPT_FILE)}
    with atomic_file(output / METADATA_FILE, "w") as fh:
        json.dump(metadata(ckpt), fh, indent=2)
    files["metadata"] = output / METADATA_FILE
    return files


def onnx_session(path: Path, threads: int | None = None):
    """An ONNX Runtime session on the CPU; ``ImportError`` saying what to install when onnxruntime is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("running an ONNX export needs onnxruntime: pip install onnxruntime "
                          "(the pin is in requirements.txt)") from None
    options = ort.SessionOptions()
    # No busy-waiting between runs: in evaluate and predict PyTorch works on the
    # logits between two runs, and spinning threads would take its cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session, x: np.ndarray) -> np.ndarray:
    """float32 (N, C, H, W) -> float32 logits, with ``session`` from ``onnx_session``."""
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, np.float32)})[0]
