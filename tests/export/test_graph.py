"""ONNX and TorchScript exports compute PyTorch's logits (fp32, within 1e-4), also for odd sizes the network pads."""
from __future__ import annotations

import builtins
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, ramp, random_checkpoint
from medseg.data.preprocess import Fit, as_hwc, to_tensor
from medseg.export.graph import METADATA_FILE, export_all, onnx_logits, onnx_session
from medseg.model.checkpoint import load_checkpoint

TOLERANCE = 1e-4
CANVAS = (97, 131)  # odd: the network pads it to a multiple of 8 and crops the logits back


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("export")
    ckpt = load_checkpoint(random_checkpoint(root / "model.pt", CANVAS, seed=0))
    return ckpt, export_all(ckpt, root / "out")


def test_both_exports_match_pytorch_on_an_odd_sized_canvas(exported) -> None:
    ckpt, files = exported
    x = torch.rand(1, 1, *CANVAS, generator=torch.Generator().manual_seed(3))
    assert x.shape == (1, 1, 97, 131)
    with torch.no_grad():
        reference = ckpt.model(x)
        scripted = torch.jit.load(str(files["torchscript"]))(x)
    onnx = onnx_logits(onnx_session(files["onnx"]), x.numpy())
    assert reference.shape == (1, 3, 97, 131) and onnx.shape == reference.shape == scripted.shape
    assert np.abs(onnx - reference.numpy()).max() <= TOLERANCE
    assert (scripted - reference).abs().max().item() <= TOLERANCE


def test_an_image_fitted_as_inference_fits_it_and_a_batch_of_three(exported) -> None:
    ckpt, files = exported
    image = ramp(50, 70, channels=1)  # another aspect: scaled and padded onto the canvas
    canvas = to_tensor(as_hwc(Fit.of(image.shape, ckpt.size).image(image))[None])
    x = torch.cat([canvas, torch.rand(2, 1, *CANVAS, generator=torch.Generator().manual_seed(4))])
    with torch.no_grad():
        reference = ckpt.model(x).numpy()
    assert np.abs(onnx_logits(onnx_session(files["onnx"]), x.numpy()) - reference).max() <= TOLERANCE
    with torch.no_grad():
        assert np.abs(torch.jit.load(str(files["torchscript"]))(x).numpy() - reference).max() <= TOLERANCE


def test_the_metadata_records_what_the_graph_does_not(exported) -> None:
    ckpt, files = exported
    meta = json.loads(files["metadata"].read_text())
    assert files["metadata"].name == METADATA_FILE
    assert meta["classes"] == ["background", "a", "b"] and meta["canvas"] == list(CANVAS)
    assert meta["input"]["shape"] == ["N", 1, 97, 131] and meta["window"] is None


def test_a_missing_onnxruntime_is_a_clear_error(exported, monkeypatch) -> None:
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        onnx_session(exported[1]["onnx"])


def test_the_command_exports_and_checks(exported, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "stages/export.py", "--model", str(exported[1]["onnx"].parent.parent /
                                                                          "model.pt"),
                           "--output", str(tmp_path / "cmd"), "--check"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in (tmp_path / "cmd").iterdir()} == {"model.onnx", "model.ts", "export.json"}
