"""predict --format coco|labelme|cvat writes pre-annotations that convert reads back (issue 20's round trip)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_predict import CLASSES

from conftest import REPO, save
from medseg.config import ConvertConfig, ModelConfig
from medseg.formats.convert import convert_dataset
from medseg.io.images import read_png
from medseg.model.checkpoint import save_checkpoint
from medseg.model.factory import build_model

READ_BACK = {"coco": {"file": "out/coco.json", "images": "in"}, "cvat": {"file": "out/cvat.xml", "images": "in"},
             "labelme": {"folder": "out/labelme"}}


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    """A small untrained network whose head favours the classes by the image's brightness: blobby predictions."""
    torch.manual_seed(3)
    cfg = ModelConfig(base_filters=4, depth=2, stem_stride=2)
    model = build_model(cfg, 1, len(CLASSES))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model.state_dict(), cfg, CLASSES, 1, (64, 64), {"image_classes": ["benign", "normal"]})
    return path


def scans(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(96, 128), (80, 80)]):
        image = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 6)
        image = (255 * (image - image.min()) / (image.max() - image.min())).astype(np.uint8)
        save(folder / f"scan {k}.png", image)


@pytest.mark.parametrize("fmt", sorted(READ_BACK))
def test_predict_then_convert_gives_the_prediction_back(tmp_path, checkpoint, fmt):
    raw = tmp_path / "raw"
    scans(raw / "in")
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "predict.py"), "--model", str(checkpoint),
                           "--input", str(raw / "in"), "--output", str(raw / "out"), "--format", fmt,
                           "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    cfg = ConvertConfig(annotation={"format": fmt, "unannotated": "background", **READ_BACK[fmt]}, classes=CLASSES,
                        image_class={"source": "fixed", "value": "scan"})
    convert_dataset(raw, tmp_path / "converted", cfg, workers=1)
    seen = set()
    for predicted in sorted((raw / "out" / "labels").glob("*.png")):
        label, back = read_png(predicted), read_png(tmp_path / "converted" / "labels" / predicted.name)
        for c in np.unique(label[label > 0]):
            seen.add(int(c))
            iou = ((back == c) & (label == c)).sum() / ((back == c) | (label == c)).sum()
            assert iou >= 0.99, (predicted.name, CLASSES[c], iou)
        assert not (back[label == 0] > 0).mean() > 0.01
    assert seen, "the network predicted no foreground: the round trip tested nothing"
    written = "".join(f.read_text() for f in (raw / "out").rglob("*") if f.suffix in (".json", ".xml"))
    assert POLYGON[fmt] in written   # components became polygons (masks only where a polygon cannot hold one)


POLYGON = {"coco": '"segmentation": [[', "cvat": "<polygon ", "labelme": '"shape_type": "polygon"'}
