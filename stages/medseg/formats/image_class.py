"""Image-level classes known before any mask is read: class folder, file-name regex, metadata CSV.

``assign_image_classes(found, rule, root)`` sets ``Sample.image_class`` for
the sources ``folder``, ``regex`` and ``csv`` of ``ImageClassRule``; the
others (``annotation``, ``mask``, ``fixed``) are decided when a sample is
converted. An image the rule cannot classify becomes a problem of its own
(the caller stops or skips it); a CSV that cannot be used at all (missing,
unreadable, a missing column, an id listed twice) raises ``DataError``
naming the file.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pandas as pd

from medseg.config import ImageClassRule
from medseg.io.errors import DataError
from medseg.io.images import display_path

from .samples import Discovery, Sample


def assign_image_classes(found: Discovery, rule: ImageClassRule, root: Path) -> None:
    if rule.source == "folder":
        found.samples = [replace(s, image_class=s.folder) for s in found.samples]
    elif rule.source == "regex":
        _assign(found, lambda s: _from_regex(s, rule.pattern))
    elif rule.source == "csv":
        table = read_class_table(root / rule.path, rule)
        _assign(found, lambda s: _from_table(s, table, rule, root / rule.path))


def _assign(found: Discovery, classify) -> None:
    kept = []
    for sample in found.samples:
        try:
            kept.append(replace(sample, image_class=classify(sample)))
        except DataError as exc:
            found.problems.append(exc)
    found.samples = kept


def _from_regex(sample: Sample, pattern: str) -> str:
    m = re.search(pattern, sample.image.stem)
    if m is None or not m.group(1):
        raise DataError(display_path(sample.image), f"name does not match image_class.pattern {pattern!r}")
    return m.group(1)


def read_class_table(path: Path, rule: ImageClassRule) -> dict[str, str]:
    """Id -> class cell (blank kept as ``""``) of a metadata CSV."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(display_path(path), "image_class CSV not found") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(display_path(path), f"unreadable CSV ({exc})") from None
    for key in ("id_column", "class_column"):
        column = getattr(rule, key)
        if column not in table.columns:
            raise DataError(display_path(path), f"no column {column!r} (image_class.{key}); "
                                                f"the columns are {list(table.columns)}")
    ids = table[rule.id_column].str.strip()
    doubled = sorted(set(ids[ids.duplicated()]))
    if doubled:
        raise DataError(display_path(path), f"id(s) listed twice in column {rule.id_column!r}: {doubled[:5]}")
    return dict(zip(ids, table[rule.class_column].str.strip(), strict=True))


def _from_table(sample: Sample, table: dict[str, str], rule: ImageClassRule, path: Path) -> str:
    stem = sample.image.stem
    if rule.id_pattern is None:
        key = stem
    else:
        m = re.search(rule.id_pattern, stem)
        if m is None:
            raise DataError(display_path(sample.image), f"name does not match image_class.id_pattern "
                                                        f"{rule.id_pattern!r}")
        key = m.group(1)
    if key not in table:
        raise DataError(display_path(sample.image), f"no row with {rule.id_column} {key!r} in {display_path(path)}")
    value = table[key]
    if not value and rule.unknown is None:
        raise DataError(display_path(sample.image), f"blank {rule.class_column!r} for {key!r} in "
                                                    f"{display_path(path)} (set image_class.unknown to accept it)")
    return value or rule.unknown
