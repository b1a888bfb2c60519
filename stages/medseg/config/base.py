"""What every section of the schema shares: strict, frozen models and the error type."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# A knob the plan stage fills in per dataset from its fingerprint (medseg.plan);
# any other value in params.yaml, globally or in a dataset's profile, overrides the plan.
AUTO = "auto"
Auto = Literal["auto"]


def _word_of_yaml_switch(value: Any) -> Any:
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


# YAML 1.1 (PyYAML) reads an unquoted on/off (and yes/no, true/false) as a boolean, so ``flip_tta: off``
# arrives as False: a field whose words include "on" or "off" takes the word that was written.
YamlSwitch = BeforeValidator(_word_of_yaml_switch)


class ConfigError(ValueError):
    """``params.yaml`` is malformed; the message names the key."""


class Strict(BaseModel):
    """Unknown keys are errors (a typo never passes silently); values cannot change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def planned(description: str) -> Any:
    """A field whose default is ``auto``: the plan stage fills it in unless params.yaml sets it."""
    return Field(AUTO, description=description, json_schema_extra={"planned": True})


def is_planned(model: type[BaseModel], name: str) -> bool:
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("planned"))


def unresolved(section: BaseModel, prefix: str = "") -> list[str]:
    """Dotted names of the planned knobs of ``section`` still at ``auto`` (nested sections included)."""
    left = []
    for name in type(section).model_fields:
        value = getattr(section, name)
        dotted = f"{prefix}.{name}" if prefix else name
        if isinstance(value, BaseModel):
            left += unresolved(value, dotted)
        elif value == AUTO and is_planned(type(section), name):
            left.append(dotted)
    return left
