"""Scale-out: data-parallel training over processes (torchrun, gloo on CPU) and a real MLflow tracking server.

The two-process runs use torchrun exactly as a user would; the server is a
real ``mlflow server`` on 127.0.0.1 with a sqlite backend and an artifact
store, started for this module.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import clone_work_tree, edit_params, ran_stages, run, shrink
from ddp_fit import make_set
from medseg.tracking.browser import free_port, serve_ui
from medseg.train.datasets import Batches
from medseg.train.distributed import World

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


# --------------------------------------------------------------------------- sharding
@pytest.mark.parametrize("processes", [1, 2, 3])
def test_processes_share_every_global_batch(processes):
    data = make_set(11, 0)  # batch 4: 4 + 4 + 3
    one = [y.numpy() for _, y in Batches(data, 4, torch.device("cpu"), torch.contiguous_format, seed=5)]
    shards = [list(Batches(data, 4, torch.device("cpu"), torch.contiguous_format, 5, World(r, processes)).weighted())
              for r in range(processes)]
    assert all(len(s) == len(one) for s in shards)  # every process takes part in every step
    for step, labels in enumerate(one):
        parts = [shards[r][step] for r in range(processes)]
        np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y, _ in parts]), labels)
        assert sum(w for _, _, w in parts) == pytest.approx(processes)  # weighted mean = mean of the global batch


def test_a_batch_smaller_than_the_process_count_is_skipped_by_all():
    data = make_set(5, 0)  # batch 4: 4 + 1; the 1 cannot be shared by 2 processes
    steps = [len(list(Batches(data, 4, torch.device("cpu"), torch.contiguous_format, 5, World(r, 2)).weighted()))
             for r in range(2)]
    assert steps == [1, 1]


# --------------------------------------------------------------------------- torchrun vs one process
def _fit(tmp_path: Path, processes: int, dice_weight: float) -> dict:
    out = tmp_path / f"fit_{processes}_{dice_weight}.pt"
    launcher = TORCHRUN if processes == 2 else [sys.executable]
    done = subprocess.run([*launcher, str(Path(__file__).with_name("ddp_fit.py")), str(out), str(dice_weight)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_two_processes_compute_the_single_process_update(tmp_path):
    """With cross-entropy alone (and instance norm, no dropout) DDP equals one process up to float order."""
    one, two = _fit(tmp_path, 1, 0.0), _fit(tmp_path, 2, 0.0)
    assert two["processes"] == 2
    np.testing.assert_allclose(two["train_loss"], one["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(two["val_dice"], one["val_dice"], atol=0.01)


@pytest.mark.slow
def test_two_processes_are_close_to_one_with_the_default_loss(tmp_path):
    """The batch Dice term is pooled per process, so the runs differ a little (measured: 0.002 in val Dice)."""
    one, two = _fit(tmp_path, 1, 1.0), _fit(tmp_path, 2, 1.0)
    np.testing.assert_allclose(two["train_loss"], one["train_loss"], rtol=0.02)
    assert abs(two["val_dice"][-1] - one["val_dice"][-1]) < 0.03
    assert two["val_dice"][-1] > 0.7  # and it did learn


# --------------------------------------------------------------------------- the train stage in a clone
@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    repo = clone_work_tree(tmp_path_factory.mktemp("scale"), shrink)
    run(["dvc", "repro", "split@synthetic"], repo)
    return repo


def _runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("medseg")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


@pytest.mark.slow
def test_train_stage_with_two_processes_from_params(clone):
    store = f"sqlite:///{clone / 'mlflow.db'}"
    before = {r.info.run_id for r in _runs(store)}
    edit_params(clone, lambda d: d["train"].update(processes=2))
    try:
        out = run(["dvc", "repro", "train@synthetic"], clone)
    finally:
        edit_params(clone, lambda d: d["train"].update(processes=1))
    assert "train@synthetic" in ran_stages(out)
    assert "starting 2 training processes" in out
    assert sorted(p.name for p in (clone / "models/synthetic").iterdir()) == ["mlflow_run.json", "model.pt"]
    assert not list((clone / "models").glob(".*tmp*"))
    summary = json.loads((clone / "metrics/datasets/synthetic/train.json").read_text())
    assert summary["processes"] == 2 and summary["epochs_run"] == 2
    new = [r for r in _runs(store) if r.info.run_id not in before]
    assert len(new) == 1                                   # one MLflow run, from process 0
    assert new[0].info.status == "FINISHED" and new[0].data.tags["processes"] == "2"
    assert new[0].info.run_id == json.loads((clone / "models/synthetic/mlflow_run.json").read_text())["run_id"]


# --------------------------------------------------------------------------- a real MLflow server
@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow_server")
    with serve_ui(f"sqlite:///{root / 'server.db'}", root / "server.log", artifacts=root / "artifacts") as url:
        yield url


def _stage(clone: Path, name: str, uri: str) -> subprocess.CompletedProcess:
    """Run one stage script by hand, after re-planning (params.yaml may have changed since the last repro)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "NO_PROXY": "127.0.0.1"}
    planned = subprocess.run([sys.executable, "stages/plan.py", "synthetic"], cwd=clone, env=env,
                             capture_output=True, text=True, timeout=600)
    assert planned.returncode == 0, planned.stderr[-3000:]
    return subprocess.run([sys.executable, f"stages/{name}.py", "synthetic"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_training_logs_to_a_tracking_server(clone, mlflow_server):
    from mlflow import MlflowClient

    for stage in ("train", "evaluate"):
        done = _stage(clone, stage, mlflow_server)
        assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((clone / "models/synthetic/mlflow_run.json").read_text())
    assert info["tracking_uri"] == mlflow_server
    client = MlflowClient(tracking_uri=mlflow_server)
    got = client.get_run(info["run_id"])
    assert got.info.status == "FINISHED" and got.data.tags["dataset"] == "synthetic"
    assert got.data.params["train.epochs"] == "2"
    assert [m.step for m in client.get_metric_history(got.info.run_id, "val_pooled_dice")] == [1, 2]
    assert "test.mean_fg_dice" in got.data.metrics               # evaluate resumed the same run on the server
    assert [a.path for a in client.list_artifacts(got.info.run_id, "model")] == ["model/model.pt"]


@pytest.mark.slow
def test_unreachable_server_warns_or_fails_fast(clone):
    dead = f"http://127.0.0.1:{free_port()}"
    done = _stage(clone, "train", dead)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"MLflow tracking at {dead} is unreachable" in done.stderr and "continuing without tracking" in done.stderr
    assert json.loads((clone / "models/synthetic/mlflow_run.json").read_text())["run_id"] is None

    edit_params(clone, lambda d: d["mlflow"].update(required=True))
    try:
        start = time.monotonic()
        done = _stage(clone, "train", dead)
        seconds = time.monotonic() - start
    finally:
        edit_params(clone, lambda d: d["mlflow"].update(required=False))
    assert done.returncode == 1
    assert "mlflow.required is true" in done.stderr and "Traceback" not in done.stderr
    assert "epoch 1" not in done.stderr, f"training started although tracking is required ({seconds:.0f} s)"
