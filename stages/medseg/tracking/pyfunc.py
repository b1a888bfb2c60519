"""A checkpoint as an MLflow model: ``mlflow.pyfunc.load_model(uri).predict(images)`` gives predict's label maps.

``SegmentationModel`` wraps one checkpoint file, or the checkpoints of every
cross-validation round predicting together (``medseg.model.ensemble``), as
the model's artifacts (``checkpoint``, ``checkpoint_fold<r>``), and the
project's own code (``medseg``, copied in as the model's code path),
so a fresh process, or ``mlflow models serve``, needs neither this checkout
nor ``params.yaml``. ``predict`` takes a batch of same-sized uint8 images,
(N, H, W) for a grey model and (N, H, W, C) for a C-channel one, as
``medseg.io.images.read_image`` decodes them, and returns (N, H, W) uint8
class indices at the images' own size: per image exactly what
``stages/predict.py`` writes to ``labels/`` for the same checkpoint or
model folder (both call ``medseg.model.ensemble.ensemble_labels``). Images
of different sizes go in separate calls. ``log_pyfunc`` logs such a model
into a run (named ``segmenter``, ``segmenter_fold<r>``: ``model_name``; an
ensemble is ``segmenter``) with its signature, an
input example and pinned requirements, inside ``store_of`` the run's store.
Imports MLflow: import this module only where a run is open.
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
MODEL_NAME = "segmenter"

# What medseg.model and medseg.data.preprocess need; pinned at the versions that trained the model.
_REQUIREMENTS = ("torch", "numpy", "monai", "opencv-python-headless", "pydantic", "pyyaml", "pillow", "pandas")
_EXAMPLE_SIZE = (8, 8)
_EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_ID"
_GLOBAL_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", _EXPERIMENT_ENV)


class SegmentationModel(mlflow.pyfunc.PythonModel):
    """The pyfunc flavour of one checkpoint, predicting on the CPU."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import torch

        from medseg.model.checkpoint import load_checkpoint
        from medseg.model.ensemble import Ensemble

        self.device = torch.device("cpu")
        members = [load_checkpoint(Path(path), self.device) for key, path in sorted(context.artifacts.items())
                   if key.startswith(CHECKPOINT)]
        self.ensemble = Ensemble.of(members, "the model's artifacts")

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        """(N, H, W[, C]) uint8 images -> (N, H, W) uint8 label maps."""
        from medseg.model.ensemble import ensemble_labels

        images = check_batch(np.asarray(model_input), self.ensemble.channels)
        labels = [ensemble_labels(self.ensemble, image, self.device) for image in images]
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


def model_name(checkpoint: Path) -> str:
    """``model.pt`` -> ``segmenter``, ``model_fold0.pt`` -> ``segmenter_fold0``.

    Not ``model``: MLflow lists a run's logged model of that name inside the
    run's ``model/`` artifact folder, where the checkpoints are.
    """
    return MODEL_NAME + Path(checkpoint).stem.removeprefix("model")


def artifact_key(checkpoint: Path) -> str:
    """``model.pt`` -> ``checkpoint``, ``model_fold0.pt`` -> ``checkpoint_fold0``."""
    return CHECKPOINT + Path(checkpoint).stem.removeprefix("model")


def log_pyfunc(run_id: str, checkpoints: list[Path], tags: dict[str, str]) -> str:
    """Log ``checkpoints`` as one MLflow model of run ``run_id``; its ``models:/`` URI.

    One checkpoint is named for itself (``model_name``), several (the rounds
    of a cross-validation, predicting together) ``segmenter``. Inside
    ``store_of`` the run's store and experiment.
    """
    from medseg.model.checkpoint import load_checkpoint

    channels = load_checkpoint(checkpoints[0]).channels
    name = model_name(checkpoints[0]) if len(checkpoints) == 1 else MODEL_NAME
    info = Model.log(artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=run_id,
                     python_model=SegmentationModel(),
                     artifacts={artifact_key(path): str(path) for path in checkpoints},
                     code_paths=[str(Path(medseg.__file__).parent)], signature=signature(channels),
                     input_example=input_example(channels), pip_requirements=requirements(), tags=tags)
    return info.model_uri


@contextlib.contextmanager
def store_of(uri: str, experiment_id: str) -> Iterator[None]:
    """MLflow's global store (tracking and registry) and experiment set to a run's while the block runs.

    Model.log creates the model in the global store and active experiment
    (else the Default one), not in its run's, and registering a ``models:/``
    source looks the model up in the global store too. Afterwards everything
    is as before, including the variables ``set_tracking_uri`` also sets:
    ``medseg.tracking.store`` reads ``$MLFLOW_TRACKING_URI``.
    """
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    saved_env = {name: os.environ.get(name) for name in _GLOBAL_ENV}
    saved = tracking._tracking_uri, registry._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    os.environ[_EXPERIMENT_ENV] = experiment_id
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])
        registry._registry_uri = saved[1]
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
