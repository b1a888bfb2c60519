"""DVC stage `track`: make sure MLflow records this dataset's result once per commit.

The result is identified by the run key (``medseg.tracking.run_key``): the
current git commit plus the dataset, data hash and params hash that train
wrote to models/<dataset>/mlflow_run.json. When the store already holds a
finished run with that key (normally the training run itself) this stage
only says so. When it holds none, because DVC restored train from its
run-cache without running it, the results were committed since they were
computed, or training ran while the store was down, it creates one run from
the files on disk: params as in params.yaml (DVC restores only when they
match), the per-epoch history from train_history.csv, the summary from
train.json, the test metrics from eval.json, the checkpoints, progress
pictures and evaluation artifacts. Writes nothing but that run. DVC runs
the stage when the results change; a new commit alone changes the key but
no dependency, so recording unchanged results under a new commit takes
`dvc repro -f -s track@<dataset>`.
"""
import logging
from pathlib import Path

import pandas as pd

from medseg import paths
from medseg.cli import run_stage
from medseg.config import Params
from medseg.errors import DataError
from medseg.tables import read_json
from medseg.tracking import Tracker, find_repo_root, numeric_metrics, run_key, sync_run

log = logging.getLogger("track")

KEY_FIELDS = ("data_hash", "params_hash")


def read_run_info(dataset: str) -> dict:
    """train's record of the run key (and the run id, when training was tracked)."""
    path = paths.model_dir(dataset) / paths.RUN_INFO
    info = read_json(path)
    missing = [name for name in KEY_FIELDS if not info.get(name)]
    if missing:
        raise DataError(path, f"no {', '.join(missing)}: the model predates run keys; retrain it "
                              f"(dvc repro -f train@{dataset})")
    return info


def run_params(dataset: str, params: Params, summary: dict) -> dict:
    """What train logs as params, plus the sections that shaped the data and the test metrics."""
    counts = {name: value for name, value in summary.items() if name.startswith("n_")}
    return {"dataset": dataset, "train": params.train.model_dump(), "augment": params.augment.model_dump(),
            "split": params.split.model_dump(), "evaluate": params.evaluate.model_dump(),
            "datasets": {dataset: params.dataset(dataset).model_dump(mode="json")}, **counts}


def round_prefix(fold: int) -> str:
    """The metric name prefix train uses for cross-validation round ``fold`` (-1: the fixed split)."""
    return f"fold{fold}." if fold >= 0 else ""


def log_results(tracker: Tracker, dataset: str, params: Params) -> None:
    """Log the results on disk as train and evaluate would have logged them."""
    summary = read_json(paths.metrics_dir(dataset) / paths.TRAIN_METRICS)
    tracker.log_params(run_params(dataset, params, summary))
    log_history(tracker, paths.metrics_dir(dataset) / paths.TRAIN_HISTORY)
    tracker.log_metrics(numeric_metrics(summary))
    scores = read_json(paths.metrics_dir(dataset) / paths.EVAL_METRICS)
    tracker.log_metrics(numeric_metrics(scores, "test"))
    log_artifacts(tracker, dataset)


def log_history(tracker: Tracker, history: Path) -> None:
    """Per-epoch metrics at step = epoch, named per cross-validation round like train names them."""
    for row in pd.read_csv(history).to_dict("records"):
        epoch, fold = int(row.pop("epoch")), int(row.pop("fold", -1))
        # The CSV has a column per class of any round; an empty cell is a class
        # missing from that round's validation images, for which train logged nothing.
        tracker.log_metrics({round_prefix(fold) + name: v for name, v in row.items() if pd.notna(v)}, step=epoch)


def log_artifacts(tracker: Tracker, dataset: str) -> None:
    """The checkpoints (one per cross-validation round), progress pictures and evaluation files."""
    for checkpoint in sorted(paths.model_dir(dataset).iterdir()):
        if checkpoint.name != paths.RUN_INFO:
            tracker.log_model_file(checkpoint)
    if paths.progress_dir(dataset).is_dir():
        tracker.log_artifact(paths.progress_dir(dataset), "progress")
    for name in (paths.EVAL_METRICS, paths.PER_IMAGE, paths.OVERLAYS):
        if (paths.metrics_dir(dataset) / name).exists():
            tracker.log_artifact(paths.metrics_dir(dataset) / name, "evaluation")


def main(dataset: str, params: Params) -> None:
    """Record one dataset's result in MLflow unless a run already holds it."""
    info = read_run_info(dataset)
    root = find_repo_root()
    key = run_key(root, dataset, info["data_hash"], info["params_hash"])
    # The run the files came from, which may belong to another commit or store.
    source = {"sync.source_run": info["run_id"]} if info.get("run_id") else {}
    sync_run(params.mlflow, root, dataset, key, source, lambda tracker: log_results(tracker, dataset, params))


if __name__ == "__main__":
    run_stage(main)
