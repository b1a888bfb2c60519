"""What train and evaluate write, and compare, track and MLflow read back.

``models/<name>/`` (train): one checkpoint per round (``Round.checkpoint``,
see ``medseg.model.checkpoint``) and ``mlflow_run.json``, the run key and the
MLflow run the model was logged to.

``metrics/datasets/<name>/``:

- ``train.json`` (train): the fixed split's summary (``best_epoch``,
  ``best_val_dice``, ``val_dice_postprocessed``, ``postprocess``, ``epochs_run``, ``stopped_early``,
  ``train_seconds``, ``n_train``, ``n_valid``, ``n_unlabelled``), or with cross-validation
  the mean over rounds plus one such section per round (``fold<r>``);
- ``train_history.csv`` (train): one row per round and epoch, ``fold``
  (-1 for the fixed split), ``epoch`` and the epoch's metrics;
- ``progress/`` (train): a picture per round and epoch (``Round.picture``);
- ``eval.json`` (evaluate): test scores, see ``medseg.evaluate.scoring``;
- ``per_image.csv``, ``image_confusion.csv``, ``pixel_confusion.json``,
  ``overlays.png`` (evaluate);
- ``per_volume.csv`` (evaluate): 3D scores per volume and class of a dataset
  sliced from volumes (``medseg.evaluate.volumes``), only a header otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medseg.io import paths
from medseg.io.atomic import atomic_file
from medseg.io.errors import DataError
from medseg.io.images import encode_png
from medseg.io.tables import read_json, write_csv, write_json

from .rounds import Round

RUN_INFO = "mlflow_run.json"
TRAIN_METRICS = "train.json"
TRAIN_HISTORY = "train_history.csv"
EVAL_METRICS = "eval.json"
PER_IMAGE = "per_image.csv"
PER_VOLUME = "per_volume.csv"
IMAGE_CONFUSION = "image_confusion.csv"
PIXEL_CONFUSION = "pixel_confusion.json"
OVERLAYS = "overlays.png"
# The evaluation files a run keeps as artifacts, in the order they are logged.
EVALUATION_ARTIFACTS = (EVAL_METRICS, PER_IMAGE, PER_VOLUME, OVERLAYS)
RUN_KEY_FIELDS = ("data_hash", "params_hash")


# --------------------------------------------------------------------------- train
def write_run_info(model_dir: Path, info: dict[str, Any]) -> None:
    write_json(Path(model_dir) / RUN_INFO, info)


def read_run_info(dataset: str) -> dict[str, Any]:
    """train's record of the run key (and the run id, when training was tracked)."""
    path = paths.model_dir(dataset) / RUN_INFO
    info = read_json(path)
    missing = [name for name in RUN_KEY_FIELDS if not info.get(name)]
    if missing:
        raise DataError(path, f"no {', '.join(missing)}: the model predates run keys; retrain it "
                              f"(dvc repro -f train@{dataset})")
    return info


def checkpoints(dataset: str) -> list[Path]:
    """Every checkpoint train wrote for ``dataset`` (one per round), in name order."""
    return sorted(p for p in paths.model_dir(dataset).iterdir() if p.name != RUN_INFO)


def write_training(dataset: str, summary: dict[str, Any], history: list[dict[str, Any]]) -> None:
    out = paths.metrics_dir(dataset)
    write_csv(out / TRAIN_HISTORY, pd.DataFrame(history))
    write_json(out / TRAIN_METRICS, summary)


def read_training(dataset: str) -> dict[str, Any]:
    return read_json(paths.metrics_dir(dataset) / TRAIN_METRICS)


def round_summaries(summary: dict[str, Any]) -> dict[Round, dict[str, Any]]:
    """Each round's own section of ``train.json``: the whole file for the fixed split."""
    if "folds" not in summary:
        return {Round(): summary}
    return {Round(r): summary[Round(r).key] for r in range(summary["folds"])}


def history_path(dataset: str) -> Path:
    return paths.metrics_dir(dataset) / TRAIN_HISTORY


# --------------------------------------------------------------------------- evaluate
def write_evaluation(dataset: str, metrics: dict[str, Any], per_image: pd.DataFrame, per_volume: pd.DataFrame,
                     image_classes: pd.DataFrame, pixels: dict[str, Any], overlays=None) -> None:
    """Write evaluate's files; ``overlays`` (an RGB picture) is optional."""
    out = paths.metrics_dir(dataset)
    write_json(out / EVAL_METRICS, metrics)
    write_csv(out / PER_IMAGE, per_image)
    write_csv(out / PER_VOLUME, per_volume)
    write_csv(out / IMAGE_CONFUSION, image_classes)
    write_json(out / PIXEL_CONFUSION, pixels)
    if overlays is not None:
        with atomic_file(out / OVERLAYS, "wb") as fh:
            fh.write(encode_png(overlays))


def read_evaluation(dataset: str) -> dict[str, Any]:
    return read_json(paths.metrics_dir(dataset) / EVAL_METRICS)


def evaluation_artifacts(dataset: str) -> list[Path]:
    """The evaluation files an MLflow run keeps, those that exist."""
    return [paths.metrics_dir(dataset) / name for name in EVALUATION_ARTIFACTS
            if (paths.metrics_dir(dataset) / name).exists()]
