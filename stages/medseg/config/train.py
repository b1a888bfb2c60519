"""Schema of ``train``: the network (``train.model``) and how it is fitted.

``ModelConfig`` is the one definition of the network's knobs and their
defaults: the model factory builds from it, checkpoints store it, and
nothing else repeats or re-validates them. The knobs follow the earlier
TensorFlow "FlexUNet" experiment (see ``medseg.model.unet``).
"""
from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator

from .base import Strict

ModelName = Literal["unet", "monai_unet", "monai_basicunet", "monai_dynunet"]
NormName = Literal["batch", "instance", "group", "none"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
NORMS: tuple[str, ...] = get_args(NormName)


class ModelConfig(Strict):
    """Which network to build and its knobs; channels and classes come from the dataset."""

    name: ModelName = Field("unet", description="our U-Net, or a MONAI network for comparison")
    base_filters: int = Field(32, ge=1, le=512, description="channels of level 0; level l has 2**l times as many")
    depth: int = Field(3, ge=1, le=7, description="down-sampling steps")
    first_kernel: int = Field(3, ge=3, le=15, description="kernel of the first level, shrinking by 2 per level to 3")
    dilation: int = Field(1, ge=1, le=8, description="dilation of the encoder convolutions")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout2d rate in the deeper half of the encoder")
    norm: NormName = "batch"
    stem_stride: Literal[1, 2, 4] = Field(4, description="fold s x s pixels into channels first (no convolution at "
                                                         "full resolution); unet only")

    @field_validator("first_kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd (3, 5, 7, ...) so 'same' padding exists, got {v}")
        return v


class TrainConfig(Strict):
    model: ModelConfig = ModelConfig()
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["plateau", "poly", "none"] = "plateau"
    plateau_patience: int = Field(3, ge=1)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    early_stopping: int = Field(6, ge=1, description="epochs without validation improvement before stopping")
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 = off")
    dice_weight: float = Field(1.0, ge=0)
    ce_weight: float = Field(1.0, ge=0)
    class_weights: dict[str, float] = Field({}, description="loss weight per class name (others 1); "
                                                            "e.g. {malignant: 3}")
    batch_dice: bool = Field(True, description="Dice over the whole batch rather than per image")
    seed: int = 2026
    threads: int = Field(2, ge=1, description="CPU threads per machine, divided among its training processes")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    processes: int = Field(1, ge=1, description="data-parallel training processes on this machine (DDP via "
                                                "torchrun); 1 = a single process")
    dist_backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto: nccl on CUDA, gloo on CPU")
    bf16: bool = Field(True, description="bf16 autocast where the CPU or GPU supports it, else fp32")
    channels_last: bool = True
    preview_images: int = Field(4, ge=0, le=16, description="validation images in each epoch's progress picture")

    @field_validator("class_weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        negative = sorted(name for name, w in v.items() if w < 0)
        if negative:
            raise ValueError(f"weight of {negative[0]!r} must be >= 0, got {v[negative[0]]}")
        return v
