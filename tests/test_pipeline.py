"""The pipeline as a user runs it: `dvc repro` in a temporary clone.

One clone per module; the tests run in order: a first repro on a tiny
synthetic config, a no-op second repro, an augment-only change, then the
shared real samples through params.yaml entries alone.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, SHARED
from medseg.imageio import read_png

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)  # the clone's own sqlite store
    env.update(GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@localhost", GIT_COMMITTER_NAME="test",
               GIT_COMMITTER_EMAIL="test@localhost", DVC_NO_ANALYTICS="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def edit_params(repo: Path, change) -> None:
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def tiny(data: dict) -> None:
    data["datasets"]["synthetic"]["source"].update(counts={"Benign": 4, "Malignant": 4, "Normal": 4},
                                                   height=96, width=128)
    data["augment"].update(copies=2, size=[64, 64], shard_size=10)
    data["train"].update(epochs=2, batch_size=4, preview_images=2,
                         model={**data["train"]["model"], "base_filters": 4, "depth": 2})
    data["evaluate"].update(bootstrap=50, overlays=2)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """Copy the working tree's files (tracked or not ignored) into a fresh git repo."""
    dst = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / os.fsdecode(name)
        if src.is_file() and not name.startswith((b"data/split/",)):
            (dst / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / os.fsdecode(name))
    edit_params(dst, tiny)
    run(["git", "init", "-q"], dst)
    run(["git", "add", "-A"], dst)
    run(["git", "commit", "-qm", "clone"], dst)
    return dst


ALL_STAGES = ("fetch", "convert", "augment", "split", "train", "evaluate", "track")


def test_first_repro_builds_every_stage(clone):
    out = run(["dvc", "repro"], clone)
    assert ran_stages(out) == {f"{s}@synthetic" for s in ALL_STAGES} | {"compare"}
    raw = clone / "data/raw/synthetic"
    assert len(list(raw.glob("*/image/*.jpg"))) == 12
    assert (clone / "data/raw/synthetic.provenance.json").is_file()
    manifest = pd.read_csv(clone / "data/converted/synthetic/manifest.csv")
    assert len(manifest) == 12 and set(manifest["image_class"]) == {"benign", "malignant", "normal"}
    assert (clone / "data/augmented/synthetic/preview.png").is_file()
    split = pd.read_csv(clone / "data/split/synthetic.csv")
    assert set(split.loc[split["kind"] == "augmented", "split"]) <= {"train", "unused"}
    assert set(split["split"]) >= {"train", "valid", "test"}
    assert (clone / "models/synthetic/model.pt").is_file()
    assert len(list((clone / "metrics/datasets/synthetic/progress").glob("epoch_*.png"))) == 2
    metrics = json.loads((clone / "metrics/datasets/synthetic/eval.json").read_text())
    assert set(metrics["dice"]) == {"liver", "benign", "malignant", "mass"}   # mass = benign + malignant
    assert metrics["n_test"] == int(((split["kind"] == "original") & (split["split"] == "test")).sum())
    shown = run(["dvc", "metrics", "show", "--json"], clone)
    assert "metrics/datasets/synthetic/eval.json" in shown and "metrics/datasets/synthetic/train.json" in shown
    summary = json.loads((clone / "metrics/summary.json").read_text())
    assert list(summary) == ["synthetic"] and summary["synthetic"]["n_test"] == metrics["n_test"]
    assert "| synthetic | mass |" in (clone / "metrics/summary.md").read_text()
    assert (clone / "metrics/summary.png").read_bytes()[:4] == b"\x89PNG"


def test_training_run_is_in_mlflow(clone):
    from mlflow.tracking import MlflowClient

    run_id = json.loads((clone / "models/synthetic/mlflow_run.json").read_text())["run_id"]
    got = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}").get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.data.tags["dataset"] == "synthetic" and got.data.tags["dvc.stage"] == "train@synthetic"
    assert got.data.params["train.epochs"] == "2"
    assert "test.mean_fg_dice" in got.data.metrics and "val_dice" in got.data.metrics


def test_second_repro_runs_nothing(clone):
    out = run(["dvc", "repro"], clone)
    assert ran_stages(out) == set()
    assert "up to date" in run(["dvc", "status"], clone)


def test_augment_param_reruns_only_what_follows_augment(clone):
    edit_params(clone, lambda d: d["augment"].update(copies=3))
    out = run(["dvc", "repro"], clone)
    assert ran_stages(out) == {f"{s}@synthetic" for s in ("augment", "split", "train", "evaluate", "track")} | {
        "compare"}
    split = pd.read_csv(clone / "data/split/synthetic.csv")
    assert (split["kind"] == "augmented").sum() == 12 * 3


def test_metrics_and_plots_diff_between_commits_name_the_dataset(clone):
    run(["git", "add", "-A"], clone)
    run(["git", "commit", "-qm", "results with 3 copies"], clone)
    edit_params(clone, lambda d: d["train"].update(lr=0.01))
    run(["dvc", "repro"], clone)
    run(["git", "add", "-A"], clone)
    run(["git", "commit", "-qm", "results with lr 0.01"], clone)
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], clone))
    assert "metrics/datasets/synthetic/eval.json" in diff and "metrics/summary.json" in diff
    assert any(key.startswith("dice.") for key in diff["metrics/datasets/synthetic/eval.json"])
    params = json.loads(run(["dvc", "params", "diff", "HEAD~1", "HEAD", "--json"], clone))
    assert params["params.yaml"]["train.lr"] == {"old": 0.002, "new": 0.01}
    plots = run(["dvc", "plots", "diff", "HEAD~1", "HEAD", "--json"], clone)
    assert "metrics/datasets/synthetic/train_history.csv" in plots


def test_same_dvc_yaml_runs_the_shared_real_samples(clone):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the real-data samples live beside the repo, not in it")
    names = ["us-liver-mini", "busi-malignant-mini", "chase-retina-mini"]

    def use_shared(data: dict) -> None:
        data["active"] = names
        for name in names:  # the clone lives elsewhere, so point at the samples by absolute path
            data["datasets"][name]["source"]["path"] = str(SHARED / name)
        data["augment"].update(copies=1)

    edit_params(clone, use_shared)
    out = run(["dvc", "repro"], clone)
    assert {f"{s}@{n}" for s in ALL_STAGES for n in names} <= ran_stages(out)
    liver = clone / "data/converted/us-liver-mini"
    assert set(np.unique(read_png(liver / "labels/10009.png"))) == {0, 1}   # benign only
    assert set(np.unique(read_png(liver / "labels/10275.png"))) == {0, 2}   # malignant only
    busi = clone / "data/converted/busi-malignant-mini"
    values = set()
    for path in (busi / "labels").glob("*.png"):
        values |= set(np.unique(read_png(path)).tolist())
    assert values == {0, 1}
    chase = pd.read_csv(clone / "data/split/chase-retina-mini.csv", dtype=str)
    originals = chase[chase["kind"] == "original"]
    assert originals["group"].nunique() == 14
    assert (originals.groupby("group")["split"].nunique() == 1).all()
