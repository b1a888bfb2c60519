"""A checkpoint as an MLflow model: ``mlflow.pyfunc.load_model(uri).predict(images)`` gives predict's label maps.

``SegmentationModel`` wraps one checkpoint file (an artifact of the model)
and the project's own code (``medseg``, copied in as the model's code path),
so a fresh process, or ``mlflow models serve``, needs neither this checkout
nor ``params.yaml``. ``predict`` takes a batch of same-sized uint8 images,
(N, H, W) for a grey model and (N, H, W, C) for a C-channel one, as
``medseg.io.images.read_image`` decodes them, and returns (N, H, W) uint8
class indices at the images' own size: per image exactly what
``stages/predict.py`` writes to ``labels/`` (both call
``medseg.model.inference.checkpoint_labels``). Images of different sizes go
in separate calls. ``log_pyfunc`` logs such a model into a run, with its
signature, an input example and pinned requirements. Imports MLflow: import
this module only where a run is open.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec

import medseg

CHECKPOINT = "checkpoint"  # the artifact's key in the model

# What medseg.model and medseg.data.preprocess need; pinned at the versions that trained the model.
_REQUIREMENTS = ("torch", "numpy", "monai", "opencv-python-headless", "pydantic", "pyyaml", "pillow", "pandas")
_EXAMPLE_SIZE = (8, 8)
_EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_ID"


class SegmentationModel(mlflow.pyfunc.PythonModel):
    """The pyfunc flavour of one checkpoint, predicting on the CPU."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import torch

        from medseg.model.checkpoint import load_checkpoint

        self.device = torch.device("cpu")
        self.ckpt = load_checkpoint(Path(context.artifacts[CHECKPOINT]), self.device)

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        """(N, H, W[, C]) uint8 images -> (N, H, W) uint8 label maps."""
        from medseg.model.inference import checkpoint_labels

        images = check_batch(np.asarray(model_input), self.ckpt.channels)
        labels = [checkpoint_labels(self.ckpt, image, self.device) for image in images]
        return np.stack(labels) if labels else np.zeros((0, *images.shape[1:3]), np.uint8)


def image_shape(channels: int) -> tuple[int, ...]:
    """The signature's shape of a batch: (N, H, W) for grey, (N, H, W, C) otherwise; -1 is any size."""
    return (-1, -1, -1) if channels == 1 else (-1, -1, -1, channels)


def check_batch(images: np.ndarray, channels: int) -> np.ndarray:
    """``images`` as uint8 (N, H, W[, C]); ``ValueError`` naming the shape expected when it is not."""
    expected = image_shape(channels)
    if images.ndim != len(expected) or (channels > 1 and images.shape[-1] != channels):
        raise ValueError(f"images of shape {images.shape}: this model takes a batch shaped "
                         f"{'(N, H, W)' if channels == 1 else f'(N, H, W, {channels})'} of uint8")
    if images.dtype != np.uint8:
        raise ValueError(f"images of dtype {images.dtype}: this model takes uint8 pixels, as read_image decodes them")
    return images


def signature(channels: int) -> ModelSignature:
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), image_shape(channels))]),
                          outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]))


def input_example(channels: int) -> np.ndarray:
    """One small ramp image, enough for MLflow to check serving works when it logs the model."""
    grey = (np.arange(_EXAMPLE_SIZE[0] * _EXAMPLE_SIZE[1]) * 4 % 256).astype(np.uint8).reshape(_EXAMPLE_SIZE)
    image = grey if channels == 1 else np.repeat(grey[..., None], channels, axis=2)
    return image[None]


def requirements() -> list[str]:
    """Exact pins of the packages the model's code imports (the local ``+cpu`` label of torch left out)."""
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in _REQUIREMENTS]


def log_pyfunc(uri: str, experiment_id: str, run_id: str, checkpoint: Path, name: str, tags: dict[str, str]) -> str:
    """Log ``checkpoint`` as the MLflow model ``name`` of run ``run_id`` (of ``experiment_id``) at ``uri``.

    Returns the model's URI (``models:/<model id>``).
    """
    from medseg.model.checkpoint import load_checkpoint

    channels = load_checkpoint(checkpoint).channels
    with _store_of(uri, experiment_id):
        info = Model.log(artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=run_id,
                         python_model=SegmentationModel(), artifacts={CHECKPOINT: str(checkpoint)},
                         code_paths=[str(Path(medseg.__file__).parent)], signature=signature(channels),
                         input_example=input_example(channels), pip_requirements=requirements(), tags=tags)
    return info.model_uri


@contextlib.contextmanager
def _store_of(uri: str, experiment_id: str) -> Iterator[None]:
    # Model.log creates the model in MLflow's global store and active
    # experiment (else the Default one), not in its run's: point both at the run's.
    previous_uri, previous_id = mlflow.get_tracking_uri(), os.environ.get(_EXPERIMENT_ENV)
    mlflow.set_tracking_uri(uri)
    os.environ[_EXPERIMENT_ENV] = experiment_id
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_uri)
        if previous_id is None:
            os.environ.pop(_EXPERIMENT_ENV, None)
        else:
            os.environ[_EXPERIMENT_ENV] = previous_id
