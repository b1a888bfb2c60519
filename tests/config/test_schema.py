"""One set of defaults: the schema's, and params.yaml sets every one of them explicitly.

DVC tracks only what params.yaml holds, so a knob left to a schema default
would change outputs without DVC noticing a params change. The sections that
apply to every dataset therefore spell out every field, at the schema's
default value; dataset profiles are free to rely on format defaults (they are
code, and ``stages/medseg/config`` is a dependency of every stage).
"""
from __future__ import annotations

import typing

import pytest
import yaml
from pydantic import BaseModel

from conftest import REPO
from medseg.config import GLOBAL_SECTIONS, MODEL_NAMES, NORMS, Params, load_params
from medseg.model.factory import BUILDERS
from medseg.model.unet import NORM_LAYERS


def _nested_models(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (through Optional, unions, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _nested_models(arg)]


def missing_fields(model: type[BaseModel], data: dict, prefix: str) -> list[str]:
    """Fields of ``model`` (recursively) that ``data`` does not set."""
    missing = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}"
        if name not in data:
            missing.append(key)
            continue
        nested = _nested_models(field.annotation)
        if len(nested) == 1 and isinstance(data[name], dict):
            missing += missing_fields(nested[0], data[name], key)
    return missing


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.mark.parametrize("section", GLOBAL_SECTIONS)
def test_params_yaml_sets_every_knob_of_the_section(raw: dict, section: str) -> None:
    model = Params.model_fields[section].annotation
    assert missing_fields(model, raw[section], section) == [], "add these keys to params.yaml"


@pytest.mark.parametrize("section", GLOBAL_SECTIONS)
def test_params_yaml_values_are_the_schema_defaults(section: str) -> None:
    shipped = getattr(load_params(REPO / "params.yaml"), section)
    default = type(shipped)()
    changed = {k: (v, default.model_dump()[k]) for k, v in shipped.model_dump().items() if v != default.model_dump()[k]}
    assert changed == {}, ("params.yaml and the schema disagree (yaml, schema): change the default in "
                           "stages/medseg/config/ when the project's default changes; run experiments with "
                           "`dvc exp run -S`")


def test_missing_fields_finds_a_nested_knob() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["train"]["model"]["stem_stride"], raw["augment"]["shadow"]["apex_above"]
    assert missing_fields(Params.model_fields["train"].annotation, raw["train"], "train") == \
        ["train.model.stem_stride"]
    assert missing_fields(Params.model_fields["augment"].annotation, raw["augment"], "augment") == \
        ["augment.shadow.apex_above"]


def test_every_choice_the_schema_allows_has_an_implementation() -> None:
    assert set(BUILDERS) == set(MODEL_NAMES)
    assert set(NORM_LAYERS) == set(NORMS)
