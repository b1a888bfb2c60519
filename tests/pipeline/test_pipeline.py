"""The pipeline as a user runs it: `dvc repro` in a temporary clone.

One clone per module; the tests run in order: a first repro on a tiny
synthetic config, a no-op second repro, an augment-only change, then the
shared real samples through params.yaml entries alone.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, SHARED, clone_work_tree, edit_params, ran_stages, run, shrink
from medseg.data.converted import IGNORE
from medseg.io.images import read_png

pytestmark = pytest.mark.slow


def tiny(data: dict) -> None:
    shrink(data)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return clone_work_tree(tmp_path_factory.mktemp("clone"), tiny)


ALL_STAGES = ("fetch", "convert", "plan", "augment", "split", "train", "evaluate", "track")


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
    assert "test.mean_fg_dice" in got.data.metrics and "val_pooled_dice" in got.data.metrics


def test_second_repro_runs_nothing(clone):
    out = run(["dvc", "repro"], clone)
    assert ran_stages(out) == set()
    assert "up to date" in run(["dvc", "status"], clone)


def test_augment_param_reruns_only_what_follows_augment(clone):
    edit_params(clone, lambda d: d["augment"].update(copies=3))
    out = run(["dvc", "repro"], clone)
    assert ran_stages(out) == {f"{s}@synthetic" for s in ("plan", "augment", "split", "train", "evaluate",
                                                            "track")} | {"compare"}
    split = pd.read_csv(clone / "data/split/synthetic.csv")
    assert (split["kind"] == "augmented").sum() == 12 * 3


def test_profile_override_reruns_only_the_stage_whose_section_changed(clone):
    """An evaluate knob set in the dataset's profile changes the plan's evaluate section only."""
    edit_params(clone, lambda d: d["datasets"]["synthetic"].update(evaluate={"bootstrap": 60}))
    out = run(["dvc", "repro"], clone)
    ran = ran_stages(out)
    assert {"plan@synthetic", "evaluate@synthetic"} <= ran  # compare only if the scores moved
    assert ran <= {f"{s}@synthetic" for s in ("plan", "evaluate", "track")} | {"compare"}
    plan = json.loads((clone / "data/plan/synthetic.json").read_text())
    assert plan["evaluate"]["bootstrap"] == 60
    edit_params(clone, lambda d: d["datasets"]["synthetic"].pop("evaluate"))
    run(["dvc", "repro"], clone)


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
    assert params["params.yaml"]["train.lr"]["old"] == 0.002 and params["params.yaml"]["train.lr"]["new"] == 0.01
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


def readme_example() -> dict:
    """The params entry from the README's worked example, exactly as documented."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Adding a dataset: a worked example", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)


UNSURE = 64  # the README example's ignore value


def write_thyroid(root: Path) -> None:
    """Images with grey-level masks named {stem}_mask, two scans per patient, a 64 "unsure" ring round each object."""
    rng = np.random.default_rng(0)
    for patient in range(1, 9):
        for scan in (1, 2):
            mask = np.zeros((48, 64), np.uint8)
            y, x = rng.integers(8, 30), rng.integers(8, 40)
            mask[y - 1:y + 11, x - 1:x + 13] = UNSURE
            mask[y:y + 10, x:x + 12] = 128 if patient % 2 else 255
            image = np.clip(rng.normal(100, 15, mask.shape) + (mask > UNSURE) * 80, 0, 255).astype(np.uint8)
            stem = f"case_{patient:03d}_{scan}"
            (root / "images").mkdir(parents=True, exist_ok=True)
            (root / "masks").mkdir(exist_ok=True)
            cv2.imwrite(str(root / "images" / f"{stem}.png"), image)
            cv2.imwrite(str(root / "masks" / f"{stem}_mask.png"), mask)


def test_new_grey_dataset_from_params_only(clone, tmp_path):
    example = readme_example()
    write_thyroid(tmp_path / "thyroid")

    def add(data: dict) -> None:
        data["active"] = example["active"]
        entry = example["datasets"]["thyroid"]
        entry["source"]["path"] = str(tmp_path / "thyroid")
        data["datasets"]["thyroid"] = entry
        data["augment"].update(copies=1)

    edit_params(clone, add)
    out = run(["dvc", "repro"], clone)
    assert {f"{s}@thyroid" for s in ALL_STAGES} | {"compare"} <= ran_stages(out)
    report = json.loads((clone / "data/converted/thyroid/report.json").read_text())
    assert report["count"] == 16 and report["groups"] == 8
    assert report["image_classes"] == {"cyst": 8, "nodule": 8}
    assert report["ignore_pixels"] == 16 * (12 * 14 - 10 * 12)  # every ring, kept as the ignore label
    assert IGNORE in read_png(clone / "data/converted/thyroid/labels/case_001_1.png")
    split = pd.read_csv(clone / "data/split/thyroid.csv", dtype=str)
    originals = split[split["kind"] == "original"]
    assert (originals.groupby("group")["split"].nunique() == 1).all()
    metrics = json.loads((clone / "metrics/datasets/thyroid/eval.json").read_text())
    assert set(metrics["dice"]) == {"nodule", "cyst"}
    assert list(json.loads((clone / "metrics/summary.json").read_text())) == ["thyroid"]
