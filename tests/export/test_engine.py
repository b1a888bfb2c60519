"""ONNX Runtime as evaluate's and predict's engine: the same logits (1e-4) and label maps as PyTorch, exported once.

The networks have random weights and non-trivial batch-norm statistics; one
predicts whole canvases, one slides a window over them with mirror averaging,
so both of inference's paths run through the exported graph.
"""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, ramp, random_checkpoint, save
from medseg.config.evaluate import EvaluateConfig
from medseg.export.engine import ONNXRUNTIME, TORCH, OnnxNetwork, cached_export, load_ensemble_on, on_engine
from medseg.io import paths
from medseg.model.checkpoint import load_checkpoint
from medseg.model.ensemble import ensemble_labels, load_ensemble
from medseg.model.inference import native_logits
from medseg.model.postprocess import Postprocess

TOLERANCE = 1e-4
CPU = torch.device("cpu")
CANVAS = (64, 96)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _checkpoint(path: Path, seed: int, window: tuple[int, int] | None = None, post: Postprocess | None = None) -> Path:
    return random_checkpoint(path, CANVAS, seed, window, post)


@pytest.fixture(params=["canvas", "window+flip"])
def checkpoint(request, tmp_path: Path) -> Path:
    if request.param == "canvas":
        return _checkpoint(tmp_path / "model.pt", seed=1)
    return _checkpoint(tmp_path / "model.pt", seed=2, window=(32, 48), post=Postprocess(flip_tta=True))


IMAGES = [ramp(61, 83, channels=1), ramp(120, 90, channels=1), ramp(64, 96, channels=1)[::-1].copy()]


def test_onnxruntime_gives_pytorchs_logits_and_labels_on_images_of_any_size(checkpoint: Path) -> None:
    ckpt = load_checkpoint(checkpoint, CPU)
    onnx = on_engine(ckpt, checkpoint, ONNXRUNTIME, CPU)
    assert isinstance(onnx.model, OnnxNetwork) and onnx.size == ckpt.size and onnx.window == ckpt.window
    flip = ckpt.postprocess.flip_tta
    on_onnx, on_torch = load_ensemble_on(checkpoint, CPU, ONNXRUNTIME), load_ensemble(checkpoint, CPU)
    for image in IMAGES:
        reference = native_logits(ckpt.model, image, ckpt.size, CPU, ckpt.window, flip)
        got = native_logits(onnx.model, image, onnx.size, CPU, onnx.window, flip)
        assert got.shape == reference.shape == (3, *image.shape[:2])
        assert (got - reference).abs().max().item() <= TOLERANCE
        top2 = reference.topk(2, dim=0).values
        decided = (top2[0] - top2[1]) > 2 * TOLERANCE  # pixels whose arg-max a 1e-4 difference cannot flip
        same = ensemble_labels(on_onnx, image, CPU) == ensemble_labels(on_torch, image, CPU)
        assert same[decided.numpy()].all() and same.mean() >= 0.999


def test_the_export_is_made_once_per_checkpoint(tmp_path: Path, cache: Path, caplog) -> None:
    first = _checkpoint(tmp_path / "a.pt", seed=1)
    ckpt = load_checkpoint(first, CPU)
    with caplog.at_level(logging.INFO, logger="medseg.export.engine"):
        path = cached_export(ckpt, first)
        assert cached_export(ckpt, first) == path
    assert sum("exporting" in r.getMessage() for r in caplog.records) == 1
    assert path.parent == cache / "onnx" and [p.name for p in path.parent.iterdir()] == [path.name]
    other = _checkpoint(tmp_path / "b.pt", seed=5)
    assert cached_export(load_checkpoint(other, CPU), other) != path  # other weights, another export


def test_torch_is_the_checkpoint_itself_and_other_engines_are_refused(checkpoint: Path) -> None:
    ckpt = load_checkpoint(checkpoint, CPU)
    assert on_engine(ckpt, checkpoint, TORCH, CPU) is ckpt
    with pytest.raises(ValueError, match="choose one of torch, onnxruntime"):
        on_engine(ckpt, checkpoint, "tensorrt", CPU)
    with pytest.raises(ValueError, match="runs on the CPU"):
        on_engine(ckpt, checkpoint, ONNXRUNTIME, torch.device("cuda"))


def test_evaluate_engine_is_checked_in_params() -> None:
    assert EvaluateConfig().engine == TORCH
    with pytest.raises(ValueError, match="onnxruntime"):
        EvaluateConfig(engine="tensorrt")


def test_predict_with_onnxruntime_writes_pytorchs_label_maps(tmp_path: Path) -> None:
    model = _checkpoint(tmp_path / "model.pt", seed=3)
    for i, image in enumerate(IMAGES):
        save(tmp_path / "scans" / f"scan{i}.png", image)
    outputs = {}  # the export goes to the ``cache`` fixture's folder, which the command inherits
    for engine in (TORCH, ONNXRUNTIME):
        done = subprocess.run([sys.executable, "stages/predict.py", "--model", str(model), "--input",
                               str(tmp_path / "scans"), "--output", str(tmp_path / engine), "--engine", engine,
                               "--device", "cpu"], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        outputs[engine] = {p.name: np.asarray(Image.open(p)) for p in sorted((tmp_path / engine / "labels").iterdir())}
    assert list(outputs[TORCH]) == [f"scan{i}.png" for i in range(len(IMAGES))]
    for name, labels in outputs[TORCH].items():
        assert (outputs[ONNXRUNTIME][name] == labels).mean() >= 0.999

