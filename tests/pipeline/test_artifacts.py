"""DVC's model registry: ``dvc.yaml`` declares every dataset's model folder as an artifact of type ``model``."""
from __future__ import annotations

import yaml

from conftest import REPO
from medseg.io import paths


def test_every_dataset_has_its_model_folder_declared_as_a_model_artifact() -> None:
    artifacts = yaml.safe_load((REPO / "dvc.yaml").read_text())["artifacts"]
    datasets = yaml.safe_load((REPO / "params.yaml").read_text())["datasets"]
    assert set(artifacts) == set(datasets)
    for name, artifact in artifacts.items():
        assert artifact["path"] == paths.model_dir(name).as_posix()  # the train stage's output
        assert artifact["type"] == "model" and artifact["desc"] and "segmentation" in artifact["labels"]
