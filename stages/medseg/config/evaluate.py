"""Schema of ``evaluate``: scoring the test split."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Strict

Engine = Literal["torch", "onnxruntime"]  # medseg.export.engine.ENGINES


class EvaluateConfig(Strict):
    combine: dict[str, list[str]] = Field(
        {"mass": ["benign", "malignant"]},
        description="extra scored classes made of several classes; applied to datasets that have all of them")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the 95% intervals")
    seed: int = 2026
    overlays: int = Field(4, ge=0, le=16, description="best and worst cases shown in the overlay grid")
    engine: Engine = Field("torch", description="what runs the network on the test images: PyTorch, or ONNX "
                                                "Runtime on the checkpoint's export (CPU; exported once per model)")

    def groups(self, classes: list[str]) -> dict[str, list[int]]:
        """The ``combine`` groups whose classes all exist in ``classes``, as label values."""
        return {name: [classes.index(c) for c in members] for name, members in self.combine.items()
                if all(c in classes for c in members)}
