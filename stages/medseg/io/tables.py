"""The small JSON and CSV files stages hand to each other.

Reading: a missing file is a ``DataError`` that says which stage to run,
rather than a bare ``FileNotFoundError``. ``read_csv`` reads every cell as
text (ids such as ``0012`` keep their zeros), empty cells as empty strings.

Writing: ``write_json`` and ``write_csv`` write atomically (``medseg.io.atomic``)
in one format for every stage: JSON indented by 2, CSV without an index and
with floats at 6 significant digits, so re-runs give identical bytes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .atomic import atomic_file
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
    except ValueError as exc:
        raise DataError(path, f"not readable JSON: {exc}") from None


def write_json(path: Path, data: Any) -> None:
    with atomic_file(path) as fh:
        json.dump(data, fh, indent=2)


def write_csv(path: Path, table: pd.DataFrame) -> None:
    with atomic_file(path, newline="") as fh:
        table.to_csv(fh, index=False, float_format="%.6g")
