"""Schema of ``plan``: how the plan stage turns a dataset's fingerprint into its ``auto`` knobs.

The plan stage (``medseg.plan``) measures the converted dataset (image sizes,
structure sizes and thickness, class frequencies, groups) and fills in every
knob left at ``auto``: the training canvas, the stem stride, depth and width
of the network, patches and batch size, the number of steps, class weights.
These knobs say what the rules aim for; each is explained where it is used.
"""
from __future__ import annotations

from pydantic import Field

from .base import Strict


class PlanConfig(Strict):
    budget_minutes: float = Field(16.0, gt=0, description="training minutes per dataset, all rounds together, at "
                                                          "reference_gflops")
    reference_gflops: float = Field(320.0, gt=0, description="training GFLOP/s (forward + backward) the budget is "
                                                            "converted with; measured on the project's 2-core CPU")
    reference_mpx: float = Field(9.0, gt=0, description="megapixels per second of the per-pixel work that does not "
                                                         "scale with the network (augmentation, loss, memory)")
    max_side: int = Field(512, ge=32, description="longest side of the training canvas, in pixels")
    min_thickness_px: float = Field(2.0, gt=0, description="the thinnest structures (10th percentile) must stay "
                                                           "this many pixels wide where the convolutions run")
    min_bottleneck_px: int = Field(4, ge=1, description="smallest side of the deepest feature map (nnU-Net: 4)")
    max_depth: int = Field(5, ge=1, le=7)
    widths: list[int] = Field([32, 16], min_length=1, description="base_filters to choose from, widest first")
    min_passes: float = Field(60.0, gt=0, description="the widest network that still passes over the training "
                                                      "pixels this often within the budget is chosen")
    max_passes: float = Field(100.0, gt=0, description="training stops after this many passes over the training "
                                                       "pixels, even when the budget allows more")
    max_patch_px: int = Field(131_072, ge=1024, description="canvases larger than this are trained on patches of "
                                                            "about this many pixels")
    pixels_per_step: int = Field(262_144, ge=1024, description="pixels per optimizer step (batch x patch)")
    validations: int = Field(40, ge=1, description="validations over the whole training (epochs)")
    max_validation_share: float = Field(0.25, gt=0, lt=1, description="fewer validations where they would take "
                                                                      "more than this share of the budget")
    shrink_step: float = Field(0.8, gt=0, lt=1, description="factor the canvas shrinks by, step by step, while the "
                                                            "budget allows too few passes")
    shrink_floor_px: float = Field(16.0, gt=0, description="the canvas never shrinks so far that the thinnest class's "
                                                           "median width on it falls below this")
    max_class_weight: float = Field(3.0, ge=1, description="cap of the planned loss weight of a rare class")
