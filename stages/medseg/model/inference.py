"""Run a trained network: logits for a batch at the training size, a label map at an image's own size.

``predict_logits`` serves validation during training and the benchmarks;
``predict_native`` serves evaluate and predict: it resizes an image of any
size to the checkpoint's training size (``medseg.data.preprocess``),
predicts, resizes the logits back to the image's height and width
(bilinear) and takes the arg-max, so scores are computed on the original
label maps, not on resized ones.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medseg.data.preprocess import as_hwc, resize_image, to_tensor

from .runtime import autocast


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, batch_size: int, device: torch.device,
                   bf16: bool = False, memory_format=torch.contiguous_format) -> torch.Tensor:
    """(N, H, W, C) uint8 -> float32 logits (N, classes, H, W) on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start:start + batch_size]).to(device, memory_format=memory_format)
        with autocast(device, bf16):
            out.append(model(x).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def predict_native(model: nn.Module, image: np.ndarray, size: tuple[int, int], device: torch.device) -> np.ndarray:
    """Label map (H, W) uint8 for one (H, W[, C]) uint8 image of any size."""
    h, w = image.shape[:2]
    x = to_tensor(as_hwc(resize_image(image, size))[None]).to(device)
    logits = model(x).float()
    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].to("cpu", torch.uint8).numpy()
