"""``params.yaml``: one schema with one set of defaults, and its loader.

One module per section, each the single home of that section's knobs,
their types, ranges and defaults: ``sources`` and ``convert`` (a dataset
profile), ``augment``, ``split``, ``train`` (with ``ModelConfig``),
``evaluate``, ``tracking`` (``mlflow``); ``params`` holds the whole file and
``load_params``. Everything public is re-exported here:
``from medseg.config import TrainConfig, load_params``.
"""
from .augment import AugmentConfig
from .base import AUTO, Auto, ConfigError, Strict, unresolved
from .convert import (
    BIT_DEPTH_RULES,
    IGNORE_KEYS,
    AulAnnotation,
    BinaryAnnotation,
    BitDepth,
    CocoAnnotation,
    ConvertConfig,
    CvatAnnotation,
    DatasetConfig,
    FolderLayout,
    GreyAnnotation,
    IgnoreLabel,
    ImageClassRule,
    InstanceAnnotation,
    LabelmeAnnotation,
    OutlineAnnotation,
    PaletteAnnotation,
    RgbAnnotation,
)
from .evaluate import EvaluateConfig
from .params import DATASET_SECTIONS, GLOBAL_SECTIONS, PARAMS_FILE, Params, load_params
from .plan import PlanConfig
from .sources import AUL_FOLDERS, ArchiveLimits, LocalSource, RemoteFile, SyntheticSource, UrlSource, ZenodoSource
from .split import AuditConfig, SplitConfig
from .tracking import MlflowConfig
from .train import (
    MODEL_NAMES,
    NORMS,
    SEMI_METHODS,
    ModelConfig,
    OnlineAugment,
    Postprocess,
    SemiSupervised,
    StrongView,
    TrainConfig,
)
from .volumes import DicomAnnotation, NiftiAnnotation, VolumeSlicing

__all__ = [
    "AUTO", "AUL_FOLDERS", "Auto", "DATASET_SECTIONS", "GLOBAL_SECTIONS", "OnlineAugment", "PlanConfig", "Postprocess",
    "unresolved", "MODEL_NAMES", "NORMS", "PARAMS_FILE", "SEMI_METHODS", "SemiSupervised", "StrongView",
    "ArchiveLimits", "AuditConfig", "AugmentConfig", "AulAnnotation", "BIT_DEPTH_RULES", "BinaryAnnotation",
    "BitDepth", "ConfigError", "ConvertConfig", "DatasetConfig", "EvaluateConfig", "FolderLayout", "GreyAnnotation",
    "IGNORE_KEYS", "IgnoreLabel", "ImageClassRule",
    "LocalSource", "MlflowConfig", "ModelConfig", "OutlineAnnotation", "PaletteAnnotation", "Params",
    "RemoteFile", "CocoAnnotation", "CvatAnnotation", "InstanceAnnotation", "LabelmeAnnotation",
    "RgbAnnotation", "SplitConfig", "Strict", "SyntheticSource", "TrainConfig", "UrlSource", "ZenodoSource",
    "DicomAnnotation", "NiftiAnnotation", "VolumeSlicing",
    "load_params",
]
