"""The predict command on a folder of images of different sizes."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, ramp, save
from medseg.config import ModelConfig
from medseg.evaluate.predict import predict_folder
from medseg.io.errors import DataError
from medseg.io.images import read_png
from medseg.model.checkpoint import save_checkpoint
from medseg.model.factory import build_model

CLASSES = ["background", "liver", "benign", "malignant"]


@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(base_filters=4, depth=2, stem_stride=2)
    model = build_model(cfg, 1, len(CLASSES))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model.state_dict(), cfg, CLASSES, 1, (32, 48),
                    {"image_classes": ["benign", "malignant", "normal"]})
    return path


def test_predicts_any_size_and_writes_findings(tmp_path, checkpoint):
    src = tmp_path / "in"
    save(src / "scan (1).png", ramp(97, 131, 3))
    save(src / "b.jpg", ramp(40, 300, 1))
    table = predict_folder(checkpoint, src, tmp_path / "out", "cpu", 10_000_000)
    assert list(table["output"]) == ["b", "scan_1"]
    assert read_png(tmp_path / "out/labels/scan_1.png").shape == (97, 131)
    assert read_png(tmp_path / "out/overlays/b.png").shape == (40, 300, 3)
    csv = pd.read_csv(tmp_path / "out/findings.csv")
    assert (csv[[f"px_{c}" for c in CLASSES[1:]]].sum(axis=1) <= csv["height"] * csv["width"]).all()
    assert set(csv["predicted_class"]) <= {"benign", "malignant", "normal"}


def test_bad_image_leaves_no_output(tmp_path, checkpoint):
    src = tmp_path / "in"
    save(src / "a.png", ramp(32, 32, 1))
    broken = save(src / "z.jpg", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    broken.write_bytes(broken.read_bytes()[:200])
    with pytest.raises(DataError, match="z.jpg"):
        predict_folder(checkpoint, src, tmp_path / "out", "cpu", 10_000_000)
    assert not (tmp_path / "out").exists()


def test_command_line_exit_code(tmp_path, checkpoint):
    proc = subprocess.run([sys.executable, str(REPO / "stages/predict.py"), "--model", str(checkpoint),
                           "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "input folder not found" in proc.stderr
