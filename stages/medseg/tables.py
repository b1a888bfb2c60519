"""Read the small CSV and JSON files stages hand to each other.

A missing file is a ``DataError`` that says which stage to run, rather than
a bare ``FileNotFoundError``. CSV cells are read as text (ids such as
``0012`` keep their zeros) with empty cells as empty strings.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .errors import DataError

_MISSING = "not found; run the earlier stages first (dvc repro)"


def read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(path, _MISSING) from None


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, _MISSING) from None
