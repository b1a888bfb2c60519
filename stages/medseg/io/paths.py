"""Where each stage writes, in one place: the folders and files of ``dvc.yaml``'s ``outs:``.

All paths are relative to the repository root, where DVC runs stages.
What lies inside a stage's folder is defined by the module that owns that
format (``medseg.data.converted``, ``medseg.data.shards``,
``medseg.data.split``, ``medseg.data.results``); ``tests/pipeline/test_dvc_yaml.py``
checks that these paths and names match ``dvc.yaml``.
"""
from __future__ import annotations

import os
from pathlib import Path

DATA = Path("data")
MODELS = Path("models")
METRICS = Path("metrics")
METRICS_DATASETS = METRICS / "datasets"


def raw_dir(dataset: str) -> Path:
    """``fetch`` output: the data as published, never modified afterwards."""
    return DATA / "raw" / dataset


def provenance_file(dataset: str) -> Path:
    """Written by ``fetch`` next to (not inside) the raw data."""
    return DATA / "raw" / f"{dataset}.provenance.json"


def download_cache(dataset: str) -> Path:
    """Verified downloads kept so a re-fetch does not download again (not tracked)."""
    return DATA / "downloads" / dataset


def converted_dir(dataset: str) -> Path:
    """``convert`` output: canonical images, label maps, manifest, report."""
    return DATA / "converted" / dataset


def plan_file(dataset: str) -> Path:
    """``plan`` output: the dataset's fingerprint and resolved sections, one small JSON kept in git."""
    return DATA / "plan" / f"{dataset}.json"


def augmented_dir(dataset: str) -> Path:
    """``augment`` output: array shards, manifest, preview grid."""
    return DATA / "augmented" / dataset


def split_file(dataset: str) -> Path:
    """``split`` output: one small CSV kept in git."""
    return DATA / "split" / f"{dataset}.csv"


def audit_file(dataset: str) -> Path:
    """``split`` output: the leak audit's near-duplicates and merged groups, one small JSON kept in git."""
    return DATA / "split" / f"{dataset}_audit.json"


def model_dir(dataset: str) -> Path:
    """``train`` output: the checkpoint(s) and the MLflow run they were logged to."""
    return MODELS / dataset


def metrics_dir(dataset: str) -> Path:
    """``train`` and ``evaluate`` metrics and plots (small, kept in git).

    All datasets sit under one folder, ``metrics/datasets``, which the
    ``compare`` stage depends on as a whole: DVC cannot list a dependency per
    active dataset in a stage that is not a ``foreach``.
    """
    return METRICS_DATASETS / dataset


def progress_dir(dataset: str) -> Path:
    """``train`` output: one picture per epoch of predictions on fixed validation images."""
    return metrics_dir(dataset) / "progress"


# ``compare`` outputs: one summary over every active dataset.
SUMMARY_JSON = METRICS / "summary.json"
SUMMARY_MD = METRICS / "summary.md"
SUMMARY_PNG = METRICS / "summary.png"
SUMMARY_DICE_CSV = METRICS / "summary_dice.csv"


# Outside the repository: what one machine keeps between runs (measured runtime
# choices, ONNX exports of checkpoints). Never a DVC output: it only saves time.
CACHE_ENV = "MEDSEG_CACHE_DIR"


def user_cache() -> Path:
    """``$MEDSEG_CACHE_DIR``, else ``~/.cache/medseg``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "medseg"
