"""Schema of ``train``: the network (``train.model``) and how it is fitted.

``SemiSupervised`` (``train.semi_supervised``) adds a consistency loss on
the unlabelled train images. ``ModelConfig`` is the one definition of the network's knobs and their
defaults: the model factory builds from it, checkpoints store it, and
nothing else repeats or re-validates them. The knobs follow the earlier
TensorFlow "FlexUNet" experiment (see ``medseg.model.unet``). Knobs whose
default is ``auto`` are planned per dataset by the plan stage; a value set in
params.yaml, globally or in a dataset's profile, overrides the plan.
"""
from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from .augment import GainContrast, Gamma, Shadow, Speckle
from .base import AUTO, Auto, Strict, YamlSwitch, planned

ModelName = Literal["unet", "monai_unet", "monai_basicunet", "monai_dynunet"]
NormName = Literal["batch", "instance", "group", "none"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
NORMS: tuple[str, ...] = get_args(NormName)


class ModelConfig(Strict):
    """Which network to build and its knobs; channels and classes come from the dataset."""

    name: ModelName = Field("unet", description="our U-Net, or a MONAI network for comparison")
    base_filters: Annotated[int, Field(ge=1, le=512)] | Auto = planned(
        "channels of level 0; level l has 2**l times as many")
    depth: Annotated[int, Field(ge=1, le=7)] | Auto = planned("down-sampling steps")
    first_kernel: int = Field(3, ge=3, le=15, description="kernel of the first level, shrinking by 2 per level to 3")
    dilation: int = Field(1, ge=1, le=8, description="dilation of the encoder convolutions")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout2d rate in the deeper half of the encoder")
    norm: NormName = "batch"
    stem_stride: Literal[1, 2, 4] | Auto = planned("fold s x s pixels into channels first (no convolution at full "
                                                   "resolution); unet only")

    @field_validator("first_kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd (3, 5, 7, ...) so 'same' padding exists, got {v}")
        return v


class OnlineAugment(Strict):
    """Random transforms applied to every training batch, in torch, seeded per step (``medseg.train.online``)."""

    p: float = Field(1.0, ge=0, le=1, description="share of the samples of a batch that are transformed")
    flip: bool = Field(True, description="mirror left-right half of the time")
    rotate_deg: float = Field(15.0, ge=0, le=180, description="largest rotation either way")
    scale: float = Field(0.15, ge=0, lt=1, description="largest zoom in or out, a fraction")
    brightness: float = Field(0.1, ge=0, le=1, description="largest additive change, a fraction of full range")
    contrast: float = Field(0.2, ge=0, lt=1, description="largest change of contrast, a fraction")
    gamma: float = Field(0.3, ge=0, le=2, description="log of the largest gamma either way")
    noise: float = Field(0.03, ge=0, le=1, description="largest std of additive Gaussian noise, a fraction of full "
                                                       "range")


class StrongView(Strict):
    """The strong view of an unlabelled image (``medseg.train.strong``): image-only perturbations laid over its
    weak view, so both share one geometry. Each has the augment stage's meaning of its knobs."""

    shadow: Shadow = Shadow(p=0.5, max_width=0.25)
    speckle: Speckle = Speckle(p=0.8, sigma=0.2)
    gain: GainContrast = GainContrast(p=0.8, brightness=0.2, contrast=0.3)
    gamma: Gamma = Gamma(p=0.5, limits=(0.7, 1.5))


SemiMethod = Literal["off", "fixmatch", "mean_teacher"]
SEMI_METHODS: tuple[str, ...] = get_args(SemiMethod)


class SemiSupervised(Strict):
    """Training on the unlabelled train images too (``medseg.train.semi``; ``split.labelled_fraction`` says
    which train images are unlabelled). Each step adds ``weight`` x ramp x a consistency loss on a batch of them."""

    method: Annotated[SemiMethod, YamlSwitch] = Field(
        "off", description="fixmatch: confident predictions on the weak view supervise the strong view; "
                           "mean_teacher: an EMA teacher on the weak view supervises the student on the strong "
                           "view; off: supervised only")
    weight: float = Field(1.0, ge=0, description="weight of the unsupervised loss against the supervised one")
    unlabelled_ratio: float = Field(1.0, gt=0, le=16, description="unlabelled images per labelled image in a step "
                                                                  "(FixMatch's mu); at least one per process")
    rampup: float = Field(0.2, ge=0, le=1, description="share of the epochs over which the weight rises from 0 "
                                                       "(sigmoid ramp); 0: the full weight from the first step")
    threshold: float = Field(0.95, ge=0, le=1, description="fixmatch: pixels whose weak-view confidence exceeds "
                                                          "it supervise the strong view")
    feature_dropout: float = Field(0.0, ge=0, lt=1, description="fixmatch: > 0 adds UniMatch's feature "
                                                               "perturbation, channel dropout at this rate on the "
                                                               "bottleneck of the weak view (unet only)")
    ema_decay: float = Field(0.99, ge=0, lt=1, description="mean_teacher: teacher = decay * teacher + (1 - decay) * "
                                                           "student after every step")
    consistency: Literal["mse", "ce"] = Field("mse", description="mean_teacher: squared error of the class "
                                                                "probabilities, or cross-entropy to the teacher's")
    strong: StrongView = StrongView()


Choice = Annotated[Literal["validation", "on", "off"], YamlSwitch]


class Postprocess(Strict):
    """What is applied to predictions; ``validation``: only if it raises the validation Dice of the best model."""

    flip_tta: Choice = Field("validation", description="average the logits of the image and its mirror")
    groups: Choice = Field("validation", description="decide background against each class group (e.g. mass = "
                                                     "benign + malignant) before the class within the group")
    largest_component: Choice = Field("validation", description="keep only the largest connected region of each "
                                                                "class")


class TrainConfig(Strict):
    model: ModelConfig = ModelConfig()
    epochs: Annotated[int, Field(ge=1)] | Auto = planned("validations; the best is kept")
    steps_per_epoch: Annotated[int, Field(ge=1)] | None | Auto = planned("optimizer steps per epoch; null: one "
                                                                          "pass over the training samples")
    batch_size: Annotated[int, Field(ge=1)] | Auto = planned("samples per optimizer step")
    patch_size: tuple[int, int] | None | Auto = planned("(height, width) crops of the canvas to train on; null: "
                                                        "the whole canvas")
    foreground_fraction: float = Field(0.33, ge=0, le=1, description="share of patches centred on a foreground pixel")
    online: OnlineAugment = OnlineAugment()
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["plateau", "poly", "none"] = "poly"
    plateau_patience: int = Field(3, ge=1)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    early_stopping: int = Field(0, ge=0, description="epochs without validation improvement before stopping; 0 = off")
    grad_clip: float = Field(12.0, ge=0, description="max gradient norm; 0 = off")
    ema: float = Field(0.0, ge=0, lt=1, description="> 0: validate and keep an exponential moving average of the "
                                                     "weights (and norm statistics), this decay per step; 0 = off")
    dice_weight: float = Field(1.0, ge=0)
    ce_weight: float = Field(1.0, ge=0)
    group_dice_weight: float = Field(1.0, ge=0, description="weight of a Dice term on each class group's union "
                                                            "(evaluate.combine)")
    class_weights: dict[str, float] | Auto = planned("cross-entropy and Dice weight per class name (others 1), "
                                                     "e.g. {malignant: 3}")
    batch_dice: bool = Field(True, description="Dice over the whole batch rather than per image")
    postprocess: Postprocess = Postprocess()
    seed: int = 2026
    threads: int = Field(2, ge=1, description="CPU threads per machine, divided among its training processes")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    processes: int = Field(1, ge=1, description="data-parallel training processes on this machine (DDP via "
                                                "torchrun); 1 = a single process")
    dist_backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto: nccl on CUDA, gloo on CPU")
    bf16: bool | Auto = Field(AUTO, description="auto: fp32 or bf16 autocast, whichever trains faster on this "
                                                 "machine (timed once, cached); true: bf16 where supported")
    channels_last: bool | Auto = Field(AUTO, description="auto: the faster memory layout on this machine")
    preview_images: int = Field(4, ge=0, le=16, description="validation images in each epoch's progress picture")
    semi_supervised: SemiSupervised = SemiSupervised()

    @field_validator("class_weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float] | str) -> dict[str, float] | str:
        if v == AUTO:
            return v
        negative = sorted(name for name, w in v.items() if w < 0)
        if negative:
            raise ValueError(f"weight of {negative[0]!r} must be >= 0, got {v[negative[0]]}")
        return v

    @model_validator(mode="after")
    def _feature_perturbation(self) -> TrainConfig:
        semi = self.semi_supervised
        if semi.feature_dropout > 0 and semi.method != "fixmatch":
            raise ValueError(f"semi_supervised.feature_dropout: perturbs the weak view of fixmatch; with method "
                             f"{semi.method!r} set it to 0")
        if semi.feature_dropout > 0 and self.model.name != "unet":
            raise ValueError(f"semi_supervised.feature_dropout: needs the bottleneck of our U-Net (model.name: unet), "
                             f"not {self.model.name!r}; set it to 0")
        return self
