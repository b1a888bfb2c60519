"""predict --format coco|labelme|cvat writes pre-annotations that convert reads back (issue 20's round trip)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
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


def assert_gives_back(predicted_labels: Path, converted_labels: Path) -> None:
    """Each predicted class comes back with IoU >= 0.99; predicted background stays background."""
    seen = set()
    for predicted in sorted(predicted_labels.glob("*.png")):
        label, back = read_png(predicted), read_png(converted_labels / predicted.name)
        for c in np.unique(label[label > 0]):
            seen.add(int(c))
            iou = ((back == c) & (label == c)).sum() / ((back == c) | (label == c)).sum()
            assert iou >= 0.99, (predicted.name, CLASSES[c], iou)
        assert not (back[label == 0] > 0).mean() > 0.01
    assert seen, "the network predicted no foreground: the round trip tested nothing"


def predict(checkpoint: Path, images: Path, out: Path, fmt: str) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "predict.py"), "--model", str(checkpoint),
                           "--input", str(images), "--output", str(out), "--format", fmt,
                           "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("fmt", sorted(READ_BACK))
def test_predict_then_convert_gives_the_prediction_back(tmp_path, checkpoint, fmt):
    raw = tmp_path / "raw"
    scans(raw / "in")
    predict(checkpoint, raw / "in", raw / "out", fmt)
    cfg = ConvertConfig(annotation={"format": fmt, "unannotated": "background", **READ_BACK[fmt]}, classes=CLASSES,
                        image_class={"source": "fixed", "value": "scan"})
    convert_dataset(raw, tmp_path / "converted", cfg, workers=1)
    assert_gives_back(raw / "out" / "labels", tmp_path / "converted" / "labels")
    written = "".join(f.read_text() for f in (raw / "out").rglob("*") if f.suffix in (".json", ".xml"))
    assert POLYGON[fmt] in written   # components became polygons (masks only where a polygon cannot hold one)


POLYGON = {"coco": '"segmentation": [[', "cvat": "<polygon ", "labelme": '"shape_type": "polygon"'}


def test_the_readme_cvat_round_trip(tmp_path, checkpoint):
    """The README's CVAT section as written: predict --format cvat, "export" unchanged, its dataset entry."""
    text = (REPO / "README.md").read_text().split("#### Round trip through CVAT", 1)[1]
    command, entry = (text.split(f"```{lang}\n", 1)[1].split("```", 1)[0] for lang in ("bash", "yaml"))
    assert "--format cvat" in command and "--output ~/scans/new/pre" in command
    convert = yaml.safe_load(entry)["datasets"]["new-scans"]["convert"]
    assert convert["classes"] == CLASSES  # what the test's checkpoint was trained on
    root = tmp_path / "new"
    scans(root / "images")
    predict(checkpoint, root / "images", root / "pre", "cvat")
    shutil.copy(root / "pre" / "cvat.xml", root / convert["annotation"]["file"])  # exported without a correction
    convert_dataset(root, tmp_path / "converted", ConvertConfig(**convert), workers=1)
    assert_gives_back(root / "pre" / "labels", tmp_path / "converted" / "labels")
