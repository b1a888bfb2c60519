"""Inference: a label map at the image's own size, whatever the training size."""
from __future__ import annotations

import numpy as np
import torch

from medseg.config import ModelConfig
from medseg.model.factory import build_model
from medseg.model.inference import predict_logits, predict_native


def test_predictions_come_back_at_native_size():
    model = build_model(ModelConfig(base_filters=4, depth=2, stem_stride=2), 1, 4).eval()
    for shape in [(97, 131), (40, 300), (64, 64, 1)]:
        image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
        pred = predict_native(model, image, (32, 48), torch.device("cpu"))
        assert pred.shape == shape[:2] and pred.dtype == np.uint8 and pred.max() < 4


def test_batched_logits_do_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    model = build_model(ModelConfig(base_filters=4, depth=2, stem_stride=2), 1, 3).eval()
    images = np.random.default_rng(1).integers(0, 255, (5, 32, 32, 1), dtype=np.uint8)
    whole = predict_logits(model, images, 5, torch.device("cpu"))
    assert whole.shape == (5, 3, 32, 32)
    torch.testing.assert_close(predict_logits(model, images, 2, torch.device("cpu")), whole, atol=1e-5, rtol=1e-5)
