"""The MLflow model of a run: what a user loads from the registry predicts what ``stages/predict.py`` writes.

One tiny clone, one ``dvc repro`` (train, evaluate, track with their real
MLflow store), then: the registered version, loaded by
``mlflow.pyfunc.load_model`` in a fresh process that has neither this
checkout on its path nor the clone, gives exactly predict's label maps; the
version and the run carry the run key, the dataset input and the source
tags; and the track stage, meeting a store that lacks the result, logs and
registers the same model from the files. With cross-validation (a second
clone, three folds) the registered version is the rounds' ensemble, and it
gives exactly the labels predict writes for the model folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import clone_work_tree, run, shrink
from medseg.data.converted import ConvertedDataset
from medseg.io import paths
from medseg.io.images import read_image
from medseg.model.checkpoint import load_checkpoint
from medseg.tracking.registry import CHECKPOINT_TAG, KEY_TAGS, registered_name
from medseg.tracking.store import KIND_TAG, TRAINING_KIND

pytestmark = pytest.mark.slow

DS = "synthetic"
NAME = registered_name(DS)

# Loads a registered model and predicts, in a process of its own: no PYTHONPATH, cwd elsewhere.
LOAD_AND_PREDICT = """
import sys, numpy as np, mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
batches = np.load(sys.argv[3])
np.savez(sys.argv[4], **{name: model.predict(batches[name]) for name in batches.files})
"""


def tiny(data: dict) -> None:
    shrink(data, per_class=2, copies=1, epochs=1, previews=1, overlays=1, bootstrap=20)
    data["mlflow"].update(experiment="medseg", tracking_uri=None, required=True)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clone = clone_work_tree(tmp_path_factory.mktemp("model"), tiny)
    run(["dvc", "repro"], clone)
    return clone


def store_uri(clone: Path, name: str = "mlflow.db") -> str:
    return f"sqlite:///{clone / name}"


def predict(clone: Path, model: Path) -> Path:
    """What ``stages/predict.py`` writes for the converted images."""
    output = clone / "predicted"
    run([sys.executable, "stages/predict.py", "--model", str(model), "--input",
         str(paths.converted_dir(DS) / "images"), "--output", str(output)], clone)
    return output


@pytest.fixture(scope="module")
def predicted(clone: Path) -> Path:
    return predict(clone, paths.model_dir(DS) / "model.pt")


def batches(clone: Path) -> dict[str, list[Path]]:
    """The converted images grouped by size (one pyfunc call takes one size), as ``read_image`` decodes them."""
    channels = ConvertedDataset(clone / paths.converted_dir(DS)).channels
    groups: dict[str, list[Path]] = {}
    for path in sorted((clone / paths.converted_dir(DS) / "images").iterdir()):
        image = read_image(path, channels, 10**8)
        groups.setdefault("x".join(map(str, image.shape)), []).append(path)
    return groups


def predict_in_fresh_process(tmp_path: Path, clone: Path, uri: str, model_uri: str) -> dict[str, np.ndarray]:
    channels = ConvertedDataset(clone / paths.converted_dir(DS)).channels
    groups = batches(clone)
    inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    np.savez(inputs, **{size: np.stack([read_image(p, channels, 10**8) for p in files])
                        for size, files in groups.items()})
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, uri, model_uri, str(inputs), str(outputs)],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    labels = np.load(outputs)
    return {path.stem: label for size, files in groups.items() for path, label in zip(files, labels[size], strict=True)}


def assert_same_labels(found: dict[str, np.ndarray], predicted: Path) -> None:
    written = {p.stem: np.asarray(Image.open(p)) for p in (predicted / "labels").iterdir()}
    assert found.keys() == written.keys() and written
    for name, label in found.items():
        assert label.dtype == np.uint8 and np.array_equal(label, written[name]), name


def test_the_registered_model_predicts_what_predict_writes(clone: Path, predicted: Path, tmp_path: Path) -> None:
    found = predict_in_fresh_process(tmp_path, clone, store_uri(clone), f"models:/{NAME}/1")
    assert_same_labels(found, predicted)
    assert any(label.any() for label in found.values())  # not all background: a real comparison


def test_the_version_and_its_run_name_the_result(clone: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(clone))
    info = json.loads((clone / paths.model_dir(DS) / "mlflow_run.json").read_text())
    [version] = client.search_model_versions(f"name = '{NAME}'")
    assert version.run_id == info["run_id"]
    trained = client.get_run(info["run_id"])
    assert {k: version.tags[k] for k in KEY_TAGS} == {k: trained.data.tags[k] for k in KEY_TAGS}
    assert version.tags["data_hash"] == info["data_hash"]
    assert trained.data.tags["mlflow.source.name"] == "stages/train.py"
    assert trained.data.tags["mlflow.source.git.commit"] == run(["git", "rev-parse", "HEAD"], clone).strip()
    [given] = trained.inputs.dataset_inputs
    assert (given.dataset.name, given.dataset.digest, given.dataset.source_type) == (DS, info["data_hash"], "dvc")
    assert json.loads(given.dataset.source) == {"path": f"data/converted/{DS}"}
    assert len(trained.data.tags["test_split.digest"]) == 16  # evaluate said which images it tested
    assert client.get_experiment(trained.info.experiment_id).tags[KIND_TAG] == TRAINING_KIND


def test_track_logs_the_same_model_into_a_store_without_the_result(clone: Path, predicted: Path,
                                                                     tmp_path: Path) -> None:
    from mlflow import MlflowClient

    other = store_uri(clone, "other.db")
    env = {**os.environ, "MLFLOW_TRACKING_URI": other, "PYTHONPATH": ""}
    subprocess.run([sys.executable, "stages/track.py", DS], cwd=clone, env=env, check=True, capture_output=True,
                   timeout=300)
    client = MlflowClient(tracking_uri=other)
    [version] = client.search_model_versions(f"name = '{NAME}'")
    synced = client.get_run(version.run_id)
    assert synced.data.tags["mlflow.source.name"] == "stages/track.py"
    assert synced.inputs.dataset_inputs[0].dataset.digest == version.tags["data_hash"]
    assert_same_labels(predict_in_fresh_process(tmp_path, clone, other, f"models:/{NAME}/1"), predicted)


def test_dvc_artifacts_get_finds_the_committed_model(clone: Path, tmp_path: Path) -> None:
    run(["git", "add", "-A"], clone)
    run(["git", "commit", "-qm", "results"], clone)
    # A version of a DVC artifact is an annotated git tag <name>@v<semver> (what `gto register` makes).
    run(["git", "tag", "-a", f"{DS}@v1.0.0", "-m", f"{DS} v1.0.0"], clone)
    run(["dvc", "artifacts", "get", str(clone), DS, "--rev", "v1.0.0", "-o", str(tmp_path / "got")], tmp_path)
    got = load_checkpoint(tmp_path / "got" / "model.pt")
    assert got.classes == load_checkpoint(clone / paths.model_dir(DS) / "model.pt").classes
    assert (tmp_path / "got" / "mlflow_run.json").is_file()


def three_folds(data: dict) -> None:
    tiny(data)
    data["datasets"][DS]["source"]["counts"] = {"Benign": 4, "Malignant": 4, "Normal": 4}
    data["split"]["folds"] = 3


def test_with_cross_validation_the_registered_model_is_the_rounds_ensemble_predict_runs(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    clone = clone_work_tree(tmp_path_factory.mktemp("model-cv"), three_folds)
    run(["dvc", "repro"], clone)
    rounds = [f"model_fold{r}.pt" for r in range(3)]
    assert sorted(p.name for p in (clone / paths.model_dir(DS)).glob("*.pt")) == rounds
    [version] = MlflowClient(tracking_uri=store_uri(clone)).search_model_versions(f"name = '{NAME}'")
    assert version.tags[CHECKPOINT_TAG] == ",".join(rounds)

    predicted = predict(clone, paths.model_dir(DS))  # the model folder: every round
    found = predict_in_fresh_process(tmp_path, clone, store_uri(clone), f"models:/{NAME}/{version.version}")
    assert_same_labels(found, predicted)
    assert any(label.any() for label in found.values())
