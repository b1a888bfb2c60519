"""A run's dataset as MLflow shows it: an input named for the dataset, its digest our data hash.

The MLflow UI lists a run's datasets (``mlflow.log_input``) with a name, a
digest and a source. Ours: the dataset's name, ``data_hash`` (every array its
models saw, ``medseg.tracking.record.data_hash``; equal digests mean the same
training data) and the DVC path of the converted dataset
(``data/converted/<name>``, source type ``dvc``), which ``dvc get`` or a
checkout of the run's commit brings back. No data is uploaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag

from medseg.io import paths

CONTEXT_TAG = "mlflow.data.context"  # the tag the UI shows as the dataset's role


class DvcPathSource(DatasetSource):
    """A path tracked by DVC in this repository (``path``, relative to its root)."""

    def __init__(self, path: str) -> None:
        self.path = path

    @staticmethod
    def _get_source_type() -> str:
        return "dvc"

    def load(self) -> Any:
        raise NotImplementedError(f"{self.path} is a DVC output: `dvc pull {self.path}` or `dvc get` it")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> DvcPathSource:
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> DvcPathSource:
        return cls(source_dict["path"])


def training_input(dataset: str, data_hash: str) -> DatasetInput:
    """The run input for ``dataset``'s training data, ready for ``MlflowClient.log_inputs``."""
    source = DvcPathSource(Path(paths.converted_dir(dataset)).as_posix())
    meta = MetaDataset(source, name=dataset, digest=data_hash)
    return DatasetInput(meta._to_mlflow_entity(), tags=[InputTag(CONTEXT_TAG, "training")])
