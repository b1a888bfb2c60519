"""Schema of ``mlflow``: where runs are logged, whether tracking may fail, and when a model is promoted."""
from __future__ import annotations

from pydantic import Field

from .base import Strict


class PromotionConfig(Strict):
    """When a new registered version takes over the alias that serves (``medseg.tracking.promote``)."""

    metric: str = Field("mean_fg_dice", min_length=1,
                        description="top-level number of eval.json compared (higher is better)")
    margin: float = Field(0.01, ge=0.0, le=1.0,
                          description="promote only when the new score beats the champion's by more than this")
    alias: str = Field("champion", pattern=r"^[A-Za-z][\w-]*$", description="the registered model alias moved")


class MlflowConfig(Strict):
    experiment: str = "medseg"
    tracking_uri: str | None = Field(None, description="overridden by $MLFLOW_TRACKING_URI; None: sqlite:///<repo>/mlflow.db")
    required: bool = Field(False, description="fail when the tracking server is unreachable")
    promotion: PromotionConfig = PromotionConfig()
