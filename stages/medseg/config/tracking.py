"""Schema of ``mlflow``: where runs are logged and whether tracking may fail."""
from __future__ import annotations

from pydantic import Field

from .base import Strict


class MlflowConfig(Strict):
    experiment: str = "medseg"
    tracking_uri: str | None = Field(None, description="overridden by $MLFLOW_TRACKING_URI; None: sqlite:///<repo>/mlflow.db")
    required: bool = Field(False, description="fail when the tracking server is unreachable")
