"""Cross-validation through the real pipeline: ``split.folds: 3`` in a temporary clone.

Every round trains its own model on its own folds and is scored on its test
fold; eval.json pools every held-out image once and adds the per-round
summary; MLflow holds one run with each round's epochs under its prefix.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import clone_work_tree, ran_stages, run, shrink

pytestmark = pytest.mark.slow
FOLDS = 3


def three_folds(data: dict) -> None:
    shrink(data, per_class=4, copies=1, epochs=2, previews=1, overlays=1, bootstrap=20)
    data["split"]["folds"] = FOLDS


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    repo = clone_work_tree(tmp_path_factory.mktemp("crossval"), three_folds)
    out = run(["dvc", "repro"], repo)
    assert {"train@synthetic", "evaluate@synthetic", "track@synthetic"} <= ran_stages(out)
    return repo


def test_each_round_trains_its_own_model(clone):
    models = sorted(p.name for p in (clone / "models/synthetic").iterdir())
    assert models == ["mlflow_run.json", "model_fold0.pt", "model_fold1.pt", "model_fold2.pt"]
    summary = json.loads((clone / "metrics/datasets/synthetic/train.json").read_text())
    assert summary["folds"] == FOLDS and all(f"fold{r}" in summary for r in range(FOLDS))
    assert summary["epochs_run"] == sum(summary[f"fold{r}"]["epochs_run"] for r in range(FOLDS))
    history = pd.read_csv(clone / "metrics/datasets/synthetic/train_history.csv")
    assert sorted(history["fold"].unique()) == list(range(FOLDS))
    pictures = {p.name for p in (clone / "metrics/datasets/synthetic/progress").iterdir()}
    assert {f"fold{r}_epoch_001.png" for r in range(FOLDS)} <= pictures


def test_every_image_is_tested_once_by_the_round_that_held_it_out(clone):
    split = pd.read_csv(clone / "data/split/synthetic.csv", dtype={"id": str})
    originals = split[split["kind"] == "original"].set_index("id")
    per_image = pd.read_csv(clone / "metrics/datasets/synthetic/per_image.csv", dtype={"id": str})
    tested = per_image.drop_duplicates("id").set_index("id")
    assert sorted(tested.index) == sorted(originals.index)
    assert (tested["fold"] == originals.loc[tested.index, "fold"]).all()
    metrics = json.loads((clone / "metrics/datasets/synthetic/eval.json").read_text())
    assert metrics["n_test"] == len(originals)
    assert metrics["cv"]["folds"] == FOLDS and len(metrics["cv"]["per_fold_mean_fg_dice"]) == FOLDS


def test_the_run_holds_every_round(clone):
    from mlflow import MlflowClient

    run_id = json.loads((clone / "models/synthetic/mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}")
    got = client.get_run(run_id)
    for r in range(FOLDS):
        assert [m.step for m in client.get_metric_history(run_id, f"fold{r}.val_pooled_dice")] == [1, 2]
    assert "test.cv.mean_fg_dice.mean" in got.data.metrics
    checkpoints = {a.path for a in client.list_artifacts(run_id, "model")}
    assert checkpoints == {f"model/model_fold{r}.pt" for r in range(FOLDS)}
