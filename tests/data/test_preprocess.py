"""One model-input contract: augment, train, evaluate and predict see the same pixels for one image."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from medseg.augment.dataset import augment_dataset
from medseg.config import AugmentConfig
from medseg.data import converted
from medseg.data.converted import ConvertedDataset
from medseg.data.preprocess import Fit, fit_pair, resize_image, resize_label, to_tensor
from medseg.data.shards import AugmentedDataset
from medseg.model.inference import predict_native
from medseg.train.datasets import load_originals

OFF = {"p": 0.0}


def write_converted(root, image: np.ndarray, label: np.ndarray):
    converted.create(root)
    converted.write_sample(root, "a", image, label)
    converted.write_manifest(root, [converted.manifest_row("a", "a", "benign", image.shape[:2], "a.png", "a.png",
                                                           np.bincount(label.ravel(), minlength=2),
                                                           ["background", "lesion"])])
    converted.write_report(root, {"classes": ["background", "lesion"], "channels": 1})
    return ConvertedDataset(root)


def test_resize_shrinks_by_area_and_enlarges_linearly() -> None:
    image = np.random.default_rng(0).integers(0, 256, (60, 80), dtype=np.uint8)
    assert np.array_equal(resize_image(image, (30, 40)), cv2.resize(image, (40, 30), interpolation=cv2.INTER_AREA))
    assert np.array_equal(resize_image(image, (90, 40)), cv2.resize(image, (40, 90), interpolation=cv2.INTER_LINEAR))
    label = (image > 128).astype(np.uint8) * 3
    assert set(np.unique(resize_label(label, (37, 53)))) <= {0, 3}


def test_to_tensor_scales_to_unit_range_channels_first() -> None:
    x = to_tensor(np.array([[[[0], [255]]]], np.uint8))
    assert x.shape == (1, 1, 1, 2) and x.dtype == torch.float32
    assert x.flatten().tolist() == [0.0, 1.0]


def test_augment_and_train_resize_an_image_identically(tmp_path) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (57, 83), dtype=np.uint8)  # shrinks one way, grows the other
    label = (image > 100).astype(np.uint8)
    data = write_converted(tmp_path / "conv", image, label)
    no_change = {name: OFF for name in ("hflip", "rotate_scale", "elastic", "grid", "speckle", "gain", "gamma",
                                        "blur", "shadow")}
    cfg = AugmentConfig(copies=1, size=(48, 96), workers=1, **no_change)
    (tmp_path / "aug").mkdir()
    augment_dataset(data, cfg, tmp_path / "aug")
    copy_image, copy_label = AugmentedDataset(tmp_path / "aug").load(["a__aug00"])
    original = load_originals(data, ["a"], cfg.size)
    assert np.array_equal(copy_image[0, ..., 0], Fit.of(image.shape, cfg.size).image(image))
    assert np.array_equal(original.images[0], copy_image[0])
    assert np.array_equal(original.labels[0], copy_label[0])


def test_prediction_sees_the_training_pixels() -> None:
    image = np.random.default_rng(2).integers(0, 256, (50, 70), dtype=np.uint8)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x)
            return torch.zeros(x.shape[0], 2, *x.shape[2:])

    predict_native(Spy(), image, (32, 48), torch.device("cpu"))
    torch.testing.assert_close(seen[0], to_tensor(Fit.of(image.shape, (32, 48)).image(image)[None, ..., None]))


def test_fitting_keeps_the_aspect_ratio_pads_and_comes_back() -> None:
    image = np.full((60, 120), 200, np.uint8)
    label = np.ones((60, 120), np.uint8)
    canvas, mask = fit_pair(image, label, (64, 64))
    fit = Fit.of((60, 120), (64, 64))
    assert (fit.top, fit.left, fit.height, fit.width) == (16, 0, 32, 64)  # 2:1 kept, centred
    assert (canvas[:16] == 0).all() and (canvas[16:48] == 200).all() and (canvas[48:] == 0).all()
    assert (mask[:16] == 0).all() and (mask[16:48] == 1).all()
    logits = torch.zeros(1, 2, 64, 64)
    logits[:, 1, 16:48] = 1.0
    back = fit.unfit(logits)
    assert back.shape == (1, 2, 60, 120) and (back.argmax(1) == 1).all()
    same = Fit.of((96, 128), (48, 64))  # equal aspect: a plain resize, no padding
    assert (same.top, same.left, same.height, same.width) == (0, 0, 48, 64)
