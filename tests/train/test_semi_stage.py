"""Semi-supervised training end to end: the train stage in a clone (fixed split and cross-validation rounds, the
counts in train.json and MLflow), and two processes under torchrun."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import clone_work_tree, edit_params, run, shrink

pytestmark = pytest.mark.slow

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
METRICS = Path("metrics/datasets/synthetic")


def half_labelled(data: dict) -> None:
    shrink(data, per_class=4, epochs=2)
    data["split"]["labelled_fraction"] = 0.5
    data["train"]["semi_supervised"].update(method="fixmatch", threshold=0.5, rampup=0.0)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return clone_work_tree(tmp_path_factory.mktemp("semi"), half_labelled)


def _run_params(repo: Path) -> dict[str, str]:
    from mlflow import MlflowClient

    info = json.loads((repo / "models/synthetic/mlflow_run.json").read_text())
    return MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}").get_run(info["run_id"]).data.params


def test_the_train_stage_trains_on_the_unlabelled_groups_and_records_the_counts(clone):
    run(["dvc", "repro", "train@synthetic"], clone)
    split = pd.read_csv(clone / "data/split/synthetic.csv")
    train = split[(split["split"] == "train") & (split["kind"] == "original")]
    unlabelled = split[(split["split"] == "train") & (split["labelled"] == 0)]
    assert train["group"].nunique() >= 2 and len(unlabelled)
    summary = json.loads((clone / METRICS / "train.json").read_text())
    assert summary["n_unlabelled"] == len(unlabelled)
    assert summary["n_train"] == int(((split["split"] == "train") & (split["labelled"] == 1)).sum())
    history = pd.read_csv(clone / METRICS / "train_history.csv")
    assert {"unsup_loss", "unsup_confident", "unlabelled_per_s"} <= set(history.columns)
    params = _run_params(clone)
    assert params["n_unlabelled"] == str(len(unlabelled)) and params["n_train"] == str(summary["n_train"])
    assert params["train.semi_supervised.method"] == "fixmatch" and params["split.labelled_fraction"] == "0.5"


def test_mean_teacher_trains_every_cross_validation_round(clone):
    def change(data: dict) -> None:
        data["split"]["folds"] = 3
        data["train"]["semi_supervised"].update(method="mean_teacher")

    edit_params(clone, change)
    run(["dvc", "repro", "train@synthetic"], clone)
    summary = json.loads((clone / METRICS / "train.json").read_text())
    assert summary["folds"] == 3
    assert all(summary[f"fold{r}"]["n_unlabelled"] > 0 for r in range(3))
    assert sorted(p.name for p in (clone / "models/synthetic").glob("*.pt")) == \
        [f"model_fold{r}.pt" for r in range(3)]


@pytest.mark.parametrize("method", ["fixmatch", "mean_teacher"])
def test_two_processes_train_alike_and_keep_one_teacher(tmp_path, method):
    script = Path(__file__).with_name("ddp_semi.py")
    done = subprocess.run([*TORCHRUN, str(script), str(tmp_path), method], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["processes"] == 2
    for key, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][key]), key  # DDP kept the weights in step
    assert all(loss > 0 for loss in ranks[0]["unsup_loss"])
    for key, value in ranks[0]["teacher"].items():  # the teacher moved by the processes' mean statistics
        assert torch.equal(value, ranks[1]["teacher"][key]), key
    mean = ranks[0]["teacher"]["inc.1.running_mean"]
    assert torch.allclose(mean, torch.full_like(mean, 0.5 * 0.0 + 0.5 * 1.5))
