"""The whole ``params.yaml``: ``Params``, its loader and readable validation errors.

``load_params()`` parses the file once (``yaml.safe_load``) and validates it;
any unknown key, wrong type or unknown class name raises ``ConfigError``
whose message names the offending key, e.g.
``datasets.busi.convert.annotation.foreground: unknown class 'tumour'``.
Stages then ask for the section they use (``params.dataset(name)``,
``params.augment``), and library code receives these objects (or plain
arguments), never the file. The defaults in the section schemas are the
project's defaults; ``params.yaml`` spells every one of them out
(``tests/config/test_schema.py`` checks that the two agree).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .augment import AugmentConfig
from .base import ConfigError, Strict
from .convert import Annotation, DatasetConfig
from .evaluate import EvaluateConfig
from .plan import PlanConfig
from .sources import Source
from .split import SplitConfig
from .tracking import MlflowConfig
from .train import TrainConfig

PARAMS_FILE = Path("params.yaml")
# Sections that apply to every dataset; params.yaml sets each of their knobs.
GLOBAL_SECTIONS = ("plan", "augment", "split", "train", "evaluate", "mlflow")
# Sections a dataset's profile may override for that dataset alone.
DATASET_SECTIONS = ("augment", "split", "train", "evaluate")


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, nested mappings merged key by key."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def dotted_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """The leaf keys of a nested mapping, dotted: ``{"model": {"depth": 3}}`` -> ``["model.depth"]``."""
    out = []
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else key
        out += dotted_keys(value, name) if isinstance(value, dict) and value else [name]
    return out


class Params(Strict):
    active: list[str] = Field(min_length=1, description="datasets that dvc repro runs")
    datasets: dict[str, DatasetConfig]
    plan: PlanConfig = PlanConfig()
    augment: AugmentConfig = AugmentConfig()
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    mlflow: MlflowConfig = MlflowConfig()

    @field_validator("datasets")
    @classmethod
    def _names(cls, v: dict[str, DatasetConfig]) -> dict[str, DatasetConfig]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(f"dataset name {name!r}: use letters, digits, '_', '-', '.'")
        return v

    @model_validator(mode="after")
    def _names_known(self) -> Params:
        for name in self.active:
            if name not in self.datasets:
                raise ValueError(f"active: unknown dataset {name!r}; known are {sorted(self.datasets)}")
        known = {c for d in self.datasets.values() for c in d.convert.classes[1:]}
        # The default groups apply to datasets that have their classes and to no other;
        # groups written in params.yaml must name classes that exist (a typo is an error).
        written = self.evaluate.combine if "combine" in self.evaluate.model_fields_set else {}
        for group, members in written.items():
            unknown = sorted(set(members) - known)
            if unknown:
                raise ValueError(f"evaluate.combine.{group}: unknown class {unknown[0]!r}; classes are {sorted(known)}")
        weights = self.train.class_weights if isinstance(self.train.class_weights, dict) else {}
        unknown = sorted(set(weights) - known - {"background"})
        if unknown:
            raise ValueError(f"train.class_weights: unknown class {unknown[0]!r}; classes are "
                             f"{['background', *sorted(known)]}")
        for name in self.datasets:
            self.sections(name)  # every profile's overrides must give valid sections
            self.plan_for(name)
        return self

    def plan_for(self, name: str) -> PlanConfig:
        """The ``plan`` section for dataset ``name``: its profile's ``plan`` over the global one."""
        try:
            return PlanConfig.model_validate(merged(self.plan.model_dump(), self.dataset(name).plan))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"datasets.{name}.plan.{where}: {err['msg']}") from None

    def sections(self, name: str) -> dict[str, Strict]:
        """``augment``, ``split``, ``train`` and ``evaluate`` for dataset ``name``: its overrides over the global ones.

        Knobs may still be ``auto``; the plan stage fills them in (``medseg.plan``).
        """
        profile = self.dataset(name)
        out = {}
        for section in DATASET_SECTIONS:
            base = getattr(self, section)
            override = getattr(profile, section)
            try:
                out[section] = type(base).model_validate(merged(base.model_dump(), override))
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"datasets.{name}.{section}.{where}: {err['msg']}") from None
        return out

    def overridden(self, name: str) -> dict[str, list[str]]:
        """The dotted knobs dataset ``name``'s profile overrides, per section."""
        return {section: dotted_keys(getattr(self.dataset(name), section)) for section in DATASET_SECTIONS}

    def dataset(self, name: str) -> DatasetConfig:
        try:
            return self.datasets[name]
        except KeyError:
            raise ConfigError(f"datasets: no dataset named {name!r}; known are {sorted(self.datasets)}") from None


def _union_tags(union) -> dict[str, set[str]]:
    """``{field: tags}`` of a discriminated union: the names pydantic puts in error locations."""
    members = get_args(get_args(union)[0])
    field = next(iter(members[0].model_fields))  # the discriminator is each member's first field
    return {field: {get_args(m.model_fields[field].annotation)[0] for m in members}}


# A discriminated union puts its tag ("synthetic", "rgb", ...) after the field
# name in an error's location; it is dropped so the key reads as in the YAML.
_UNION_TAGS = {"source": _union_tags(Source)["kind"], "annotation": _union_tags(Annotation)["format"]}


_TOP = "(top level)"


def _key(loc: tuple) -> str:
    parts = [str(p) for i, p in enumerate(loc) if not (i > 0 and p in _UNION_TAGS.get(loc[i - 1], ()))]
    return ".".join(parts) or _TOP


def _format_error(exc: ValidationError, path: Path) -> str:
    lines = [f"{path}: invalid parameters"]
    for err in exc.errors():
        key, msg = _key(err["loc"]), err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "value_error":
            # Cross-field checks raise "field: problem"; fold the field into the key.
            msg = str(err["ctx"]["error"])
            field, sep, rest = msg.partition(": ")
            if sep and re.fullmatch(r"[A-Za-z0-9_.-]+", field):
                key, msg = (field if key == _TOP else f"{key}.{field}"), rest
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml``; raise ``ConfigError`` naming the bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, path)) from None
