"""Every artifact path of the pipeline, in one place.

These match the ``outs:`` of ``dvc.yaml`` (``tests/test_dvc_yaml.py`` checks
it). All paths are relative to the repository root, where DVC runs stages.
"""
from __future__ import annotations

from pathlib import Path

DATA = Path("data")
MODELS = Path("models")
METRICS = Path("metrics")


def raw_dir(dataset: str) -> Path:
    """``fetch`` output: the data as published, never modified afterwards."""
    return DATA / "raw" / dataset


def provenance_file(dataset: str) -> Path:
    """Written by ``fetch`` next to (not inside) the raw data."""
    return DATA / "raw" / f"{dataset}.provenance.json"


def converted_dir(dataset: str) -> Path:
    """``convert`` output: canonical images, label maps, manifest, report."""
    return DATA / "converted" / dataset


def augmented_dir(dataset: str) -> Path:
    """``augment`` output: array shards, manifest, preview grid."""
    return DATA / "augmented" / dataset


def split_file(dataset: str) -> Path:
    """``split`` output: one small CSV kept in git."""
    return DATA / "split" / f"{dataset}.csv"


# Names inside stage folders.
MANIFEST = "manifest.csv"
REPORT = "report.json"
IMAGES = "images"
LABELS = "labels"
SHARDS = "shards"
PREVIEW = "preview.png"


def download_cache(dataset: str) -> Path:
    """Verified downloads kept so a re-fetch does not download again (not tracked)."""
    return DATA / "downloads" / dataset


def model_dir(dataset: str) -> Path:
    """``train`` output: the checkpoint and the MLflow run it was logged to."""
    return MODELS / dataset


def metrics_dir(dataset: str) -> Path:
    """``train`` and ``evaluate`` metrics and plots (small, kept in git)."""
    return METRICS / dataset


def progress_dir(dataset: str) -> Path:
    """``train`` output: one picture per epoch of predictions on fixed validation images."""
    return METRICS / dataset / "progress"


def eval_dir(dataset: str) -> Path:
    """``evaluate`` output: per-image scores, confusion matrix, overlays."""
    return METRICS / dataset / "eval"


CHECKPOINT = "model.pt"
RUN_INFO = "mlflow_run.json"
TRAIN_METRICS = "train.json"
TRAIN_HISTORY = "train_history.csv"
EVAL_METRICS = "eval.json"
PER_IMAGE = "per_image.csv"
IMAGE_CONFUSION = "image_confusion.csv"
PIXEL_CONFUSION = "pixel_confusion.json"
OVERLAYS = "overlays.png"
AUGMENT_STATS = "augment.json"
