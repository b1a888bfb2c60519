"""How nested params and metrics become MLflow's flat, length-limited params, metrics and tags."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

# MLflow's limits (mlflow.utils.validation), copied so that ``flatten`` does not
# import MLflow; tests/tracking/test_run.py checks they still match.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000

# What MLflow accepts in a param or metric name; anything else (the '*' of a
# profile key such as structures: {"livertumor*": tumour}) becomes '_'.
_NOT_IN_NAMES = re.compile(r"[^\w\-. :/]")

T = TypeVar("T")

TEST_PREFIX = "test"  # eval.json's numbers are run metrics under this prefix (medseg.tracking.record)


def evaluation_metric(name: str) -> str:
    """The run metric holding ``eval.json``'s top-level number ``name``: ``test.<name>``."""
    return f"{TEST_PREFIX}.{name}"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1, "c": [1, 2]}}`` -> ``{"a.b": "1", "a.c": "[1, 2]"}``, values cut to MLflow's limit.

    A key's characters MLflow refuses in names become ``_`` (``livertumor*`` -> ``livertumor_``).
    """
    flat: dict[str, str] = {}
    for key, value in d.items():
        key = _NOT_IN_NAMES.sub("_", str(key))
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = _truncate(_as_text(value), MAX_PARAM_VALUE)
    return flat


def numeric_metrics(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers in nested ``d``, flattened like ``flatten``; text, lists, booleans and ``None`` are left out.

    ``numeric_metrics({"dice": {"liver": 0.9}, "n": 3, "note": None}, "test")``
    is ``{"test.dice.liver": 0.9, "test.n": 3.0}``.
    """
    return {name: float(value) for name, value in flatten(d, prefix).items() if _is_float(value)}


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _as_text(value: Any) -> str:
    if isinstance(value, (list, tuple, Mapping)):
        return json.dumps(value, default=str)
    return str(value)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tag_values(tags: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): _truncate(str(v), MAX_TAG_VALUE) for k, v in tags.items()}


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
