"""Run a trained network: logits for a batch on the training canvas, a label map at an image's own size.

``predict_logits`` serves validation during training and the benchmarks: it
runs whole canvases, or, when the model was trained on patches smaller than
the canvas, slides a window of the patch size over them (MONAI's
``sliding_window_inference``, overlapping by half, Gaussian-weighted, as
nnU-Net does). ``predict_native`` serves evaluate and predict: it fits an
image of any size into the checkpoint's canvas (``medseg.data.preprocess``),
predicts (optionally also on the mirror image), brings the logits back to
the image's own height and width (bilinear), and turns them into labels with
the checkpoint's ``Postprocess``, so scores are computed on the original
label maps, not on resized ones. ``checkpoint_labels`` is that with everything
a loaded checkpoint records: predict and the MLflow model (``medseg.tracking.pyfunc``) call it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from medseg.data.preprocess import Fit, as_hwc, to_tensor

from .postprocess import PLAIN, Postprocess
from .runtime import autocast

if TYPE_CHECKING:
    from .checkpoint import Checkpoint


def _forward(model: nn.Module, x: torch.Tensor, window: tuple[int, int] | None) -> torch.Tensor:
    if window is None or (window[0] >= x.shape[-2] and window[1] >= x.shape[-1]):
        return model(x)
    return sliding_window_inference(x, window, sw_batch_size=4, predictor=model, overlap=0.5, mode="gaussian")


@torch.no_grad()
def canvas_logits(model: nn.Module, x: torch.Tensor, window: tuple[int, int] | None = None, flip: bool = False,
                  bf16: bool = False) -> torch.Tensor:
    """(N, C, H, W) canvases -> float32 logits (N, classes, H, W); ``flip`` averages with the mirror image's."""
    with autocast(x.device, bf16):
        logits = _forward(model, x, window).float()
        if flip:
            logits = (logits + _forward(model, x.flip(-1), window).float().flip(-1)) / 2
    return logits


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, batch_size: int, device: torch.device,
                   bf16: bool = False, memory_format=torch.contiguous_format,
                   window: tuple[int, int] | None = None, flip: bool = False) -> torch.Tensor:
    """(N, H, W, C) uint8 canvases -> float32 logits (N, classes, H, W) on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start:start + batch_size]).to(device, memory_format=memory_format)
        out.append(canvas_logits(model, x, window, flip, bf16).cpu())
    return torch.cat(out)


@torch.no_grad()
def native_logits(model: nn.Module, image: np.ndarray, size: tuple[int, int], device: torch.device,
                  window: tuple[int, int] | None = None, flip: bool = False) -> torch.Tensor:
    """Float32 logits (classes, H, W) on the CPU for one (H, W[, C]) uint8 image of any size."""
    model.eval()
    fit = Fit.of(image.shape[:2], size)
    x = to_tensor(as_hwc(fit.image(image))[None]).to(device)
    return fit.unfit(canvas_logits(model, x, window, flip))[0].cpu()


def predict_native(model: nn.Module, image: np.ndarray, size: tuple[int, int], device: torch.device,
                   window: tuple[int, int] | None = None, post: Postprocess = PLAIN) -> np.ndarray:
    """Label map (H, W) uint8 for one (H, W[, C]) uint8 image of any size."""
    return post.labels(native_logits(model, image, size, device, window, post.flip_tta))


def checkpoint_labels(ckpt: Checkpoint, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Label map (H, W) uint8 for one (H, W[, C]) uint8 image: the checkpoint's canvas, window and post-processing."""
    return predict_native(ckpt.model, image, ckpt.size, device, ckpt.window, ckpt.postprocess)
