"""What the MLflow run of one dataset's result holds, defined once for train, evaluate and track.

A run is keyed by the commit, the dataset, a hash of every array its models
saw (``data_hash``) and a hash of the params sections that shaped them
(``params_hash``; see ``medseg.tracking.sync``). It holds:

- params (``run_params``): the dataset's name and profile (``datasets.<name>``),
  the plan's resolved ``augment``, ``split`` and ``train`` (every ``auto``
  filled in; ``split.labelled_fraction`` and ``train.semi_supervised`` among them), and the first
  round's ``n_train`` (labelled samples), ``n_valid`` and ``n_unlabelled``. ``evaluate`` is left
  out: a change there re-runs evaluate only, which adds its test metrics to the same run;
- per-epoch metrics at step = epoch, the columns of ``train_history.csv``,
  prefixed per cross-validation round (``fold<r>.``);
- the numbers of ``train.json``, and of ``eval.json`` prefixed ``test.``;
- artifacts: every checkpoint under ``model/``, the progress pictures under
  ``progress/``, and ``eval.json``, ``per_image.csv``, ``overlays.png``
  under ``evaluation/``;
- every checkpoint also as an MLflow model named for it (``segmenter``,
  ``segmenter_fold0``, ...: ``medseg.tracking.pyfunc``); what ``predict``
  runs on the model folder is registered as a version of ``medseg-<dataset>``
  (``medseg.tracking.registry``): the fixed split's checkpoint, or with
  cross-validation every round's together (``registered_members``), logged
  as ``segmenter`` once the last round's checkpoint is;
- the training data as a run input (``medseg.tracking.inputs``: digest = data hash);
- the tag ``test_split.digest`` (``split_digest``): which images were tested,
  so promotion never compares scores of different test sets.

Train logs the first three as they happen (``start_training_run``,
``log_epoch``, ``log_training_summary``), evaluate adds the test part
(``log_evaluation``), and track recreates all of it from the files on disk
when no run holds the result (``log_from_files``) with these same functions,
so a recreated run has the same columns as a live one.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medseg.config import Params
from medseg.data import results
from medseg.data.plans import Plan, read_plan
from medseg.data.rounds import Round, rounds
from medseg.data.split import read_split
from medseg.io import paths

from .registry import CHECKPOINT_TAG, KEY_TAGS, register
from .run import Tracker
from .store import find_repo_root
from .sync import run_key, sync_run
from .values import TEST_PREFIX, numeric_metrics

if TYPE_CHECKING:
    import torch

CHECKPOINTS, PROGRESS, EVALUATION = "model", "progress", "evaluation"  # artifact folders of a run
SPLIT_TAG = "test_split.digest"


# --------------------------------------------------------------------------- the key
def data_hash(arrays: Iterable[np.ndarray]) -> str:
    """Hash of the arrays a dataset's models saw (train and valid images and labels of every round)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def params_hash(dataset: str, params: Params, plan: Plan) -> str:
    """Hash of every section that shaped ``dataset``'s models: its profile and the plan's resolved sections.

    ``evaluate`` is not one of them.
    """
    shaping = json.dumps(_shaping_sections(dataset, params, plan), sort_keys=True)
    return hashlib.sha256(shaping.encode()).hexdigest()[:16]


def split_rounds(split: pd.DataFrame) -> list[Round]:
    """The rounds of a split table: the fixed split, or one per fold."""
    folds = split["fold"].astype(int)
    return rounds(int(folds.max()) + 1 if (folds >= 0).any() else 0)


def split_digest(split: pd.DataFrame) -> str:
    """Hash of which originals each round tests (``Round.select``): equal digests, the same test images."""
    digest = hashlib.sha256()
    for round_ in split_rounds(split):
        for image in sorted(round_.select(split)["test"]["id"]):
            digest.update(f"{round_.key}:{image}\n".encode())
    return digest.hexdigest()[:16]


def _shaping_sections(dataset: str, params: Params, plan: Plan) -> dict[str, Any]:
    sections = {"dataset": params.dataset(dataset), "augment": plan.augment, "split": plan.split, "train": plan.train}
    return {name: section.model_dump(mode="json") for name, section in sections.items()}


# --------------------------------------------------------------------------- train
def run_params(dataset: str, params: Params, plan: Plan, n_train: int, n_valid: int,
               n_unlabelled: int) -> dict[str, Any]:
    """The run's params: the profile, the plan's sections that shaped the model, the first round's set sizes."""
    return {"dataset": dataset, "datasets": {dataset: params.dataset(dataset).model_dump(mode="json")},
            "augment": plan.augment.model_dump(mode="json"), "split": plan.split.model_dump(mode="json"),
            "train": plan.train.model_dump(mode="json"), "n_train": n_train, "n_valid": n_valid,
            "n_unlabelled": n_unlabelled}


def start_training_run(params: Params, dataset: str, key: Mapping[str, str], device: torch.device,
                       processes: int) -> Tracker:
    tracker = Tracker.start(params.mlflow, run_name=dataset, repo_root=find_repo_root(),
                            tags={**key, "device": str(device), "processes": processes})
    log_dataset(tracker, dataset, key["data_hash"])
    return tracker


def log_dataset(tracker: Tracker, dataset: str, data_hash: str) -> None:
    """The training data as the run's input (name, data hash as digest, DVC path as source)."""
    def log(client, run_id: str) -> None:
        from .inputs import training_input

        client.log_inputs(run_id, datasets=[training_input(dataset, data_hash)])

    tracker.call("log dataset", log)


def log_epoch(tracker: Tracker, round_: Round, epoch: int, metrics: Mapping[str, float]) -> None:
    """One epoch's row of ``train_history.csv``, named for its round, at step = epoch."""
    tracker.log_metrics({round_.prefix + name: value for name, value in metrics.items()}, step=epoch)


def log_training_summary(tracker: Tracker, summary: Mapping[str, Any], progress: Path | None) -> None:
    """``train.json``'s numbers and the progress pictures."""
    tracker.log_metrics(numeric_metrics(summary))
    if progress is not None and Path(progress).is_dir():
        tracker.log_artifact(progress, PROGRESS)


def registered_members(path: Path, dataset: str) -> list[Path] | None:
    """The checkpoints of the registered version when ``path`` is the last of them, else ``None``.

    Every round of ``dataset``'s split table, in the folder of ``path``: what
    ``predict`` runs on that folder (``medseg.model.ensemble``).
    """
    if path.name == Round().checkpoint:  # the fixed split's one model
        return [path]
    names = [round_.checkpoint for round_ in split_rounds(read_split(paths.split_file(dataset)))]
    if path.name != names[-1]:
        return None
    members = [path.parent / name for name in names]
    missing = [p.name for p in members if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{path.parent}: lacks {missing} of the rounds to register together")
    return members


def log_checkpoint(tracker: Tracker, path: Path) -> None:
    """The checkpoint as an artifact and as an MLflow model; the registered version once its last member is logged."""
    path = Path(path)
    tracker.log_artifact(path, CHECKPOINTS)

    def log(client, run_id: str) -> None:
        from .pyfunc import log_pyfunc, store_of

        run = client.get_run(run_id)
        tags = {name: value for name, value in run.data.tags.items() if name in KEY_TAGS}
        members = registered_members(path, tags["dataset"])
        with store_of(tracker.uri, run.info.experiment_id):
            uri = log_pyfunc(run_id, [path], {**tags, CHECKPOINT_TAG: path.name})
            if members is not None:
                together = {**tags, CHECKPOINT_TAG: ",".join(p.name for p in members)}
                register(client, uri if len(members) == 1 else log_pyfunc(run_id, members, together), run_id,
                         together)

    tracker.call(f"log model {path.stem}", log)


# --------------------------------------------------------------------------- evaluate
def log_evaluation(tracker: Tracker, dataset: str, metrics: Mapping[str, Any]) -> None:
    """``eval.json``'s numbers as ``test.*`` and the evaluation files."""
    tracker.log_metrics(numeric_metrics(metrics, TEST_PREFIX))
    tracker.set_tags({SPLIT_TAG: split_digest(read_split(paths.split_file(dataset)))})
    for path in results.evaluation_artifacts(dataset):
        tracker.log_artifact(path, EVALUATION)


def add_evaluation(params: Params, dataset: str, metrics: Mapping[str, Any]) -> None:
    """Add the test results to the run train opened for ``dataset``'s model (none: training was not tracked)."""
    run_id = results.read_run_info(dataset).get("run_id")
    if not run_id:
        return
    with Tracker.resume(params.mlflow, run_id, find_repo_root()) as tracker:
        log_evaluation(tracker, dataset, metrics)


# --------------------------------------------------------------------------- track
def log_history(tracker: Tracker, history: Path) -> None:
    """Replay ``train_history.csv`` as ``log_epoch`` logged it."""
    for row in pd.read_csv(history).to_dict("records"):
        epoch, fold = int(row.pop("epoch")), int(row.pop("fold"))
        # The CSV has a column per class of any round; an empty cell is a class
        # missing from that round's validation images, for which train logged nothing.
        log_epoch(tracker, Round.from_fold(fold), epoch, {name: v for name, v in row.items() if pd.notna(v)})


def log_from_files(tracker: Tracker, dataset: str, params: Params) -> None:
    """Log the results on disk as train and evaluate log them."""
    summary = results.read_training(dataset)
    first = next(iter(results.round_summaries(summary).values()))
    tracker.log_params(run_params(dataset, params, read_plan(dataset, params), first["n_train"], first["n_valid"],
                                  first["n_unlabelled"]))
    log_dataset(tracker, dataset, results.read_run_info(dataset)["data_hash"])
    log_history(tracker, results.history_path(dataset))
    for checkpoint in results.checkpoints(dataset):
        log_checkpoint(tracker, checkpoint)
    log_training_summary(tracker, summary, paths.progress_dir(dataset))
    log_evaluation(tracker, dataset, results.read_evaluation(dataset))


def sync(dataset: str, params: Params) -> str | None:
    """Make sure the store holds one run for ``dataset``'s result on disk under the current commit; its id."""
    info = results.read_run_info(dataset)
    root = find_repo_root()
    key = run_key(root, dataset, info["data_hash"], info["params_hash"])
    # The run the files came from, which may belong to another commit or store.
    source = {"sync.source_run": info["run_id"]} if info.get("run_id") else {}
    return sync_run(params.mlflow, root, dataset, key, source, lambda tracker: log_from_files(tracker, dataset, params))
