"""The published split of a dataset that came split (``layout.split_folders``), made group-safe.

Input: the converted manifest's originals (``id``, ``group`` after the leak
audit's merges, ``published_split``) and ``split.predefined_conflict``.
Output: a ``Resolution``, each group's split and the groups moved to get it.

The published split is kept where it keeps every patient group on one
side. A group it puts on two sides is, with ``move``, moved whole to the
side holding most of its images. A tie (one eye on each side) goes to the
tied side that has lost most images to earlier moves, so that the sides
keep their published sizes as closely as they can (groups are taken in
name order); a tie there goes to the side earlier in ``PRIORITY`` (test,
valid, train). With ``refuse`` the first such group is a ``DataError``
naming the files on each side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd

from medseg.config import PARAMS_FILE
from medseg.io.errors import DataError

PRIORITY = ("test", "valid", "train")  # who wins a tie that the published sizes leave open
COLUMN = "published_split"


@dataclass(frozen=True)
class Move:
    """A group the published split put on several sides, now whole on ``to``."""

    group: str
    to: str
    sides: dict[str, list[str]]  # published split -> ids of the group's images there

    def record(self) -> dict:
        return {"group": self.group, "to": self.to, "published": self.sides}


@dataclass(frozen=True)
class Resolution:
    splits: dict[str, str]  # group -> split
    moves: list[Move]


def _winner(sides: dict[str, list[str]], lost: dict[str, int]) -> str:
    """The side holding most of the group; among equals, the one that has lost most images, then ``PRIORITY``."""
    return max(sides, key=lambda s: (len(sides[s]), lost[s], -PRIORITY.index(s)))


def resolve(originals: pd.DataFrame, conflict: Literal["move", "refuse"]) -> Resolution:
    """Each group's published split; groups on several sides moved (or refused) as the module says."""
    published = originals[COLUMN] if COLUMN in originals else pd.Series("", index=originals.index)
    unset = originals.loc[~published.isin(PRIORITY), "id"].tolist()
    if unset:
        raise DataError(PARAMS_FILE, f"split.predefined is respect but {len(unset)} image(s) have no published "
                                     f"split, e.g. {unset[:3]}; name the split folders in the dataset's "
                                     "layout.split_folders, or set split.predefined: ignore")
    splits, moves = {}, []
    lost = dict.fromkeys(PRIORITY, 0)  # images each side has lost to moves, net of what it gained
    frame = originals.assign(published=published).sort_values(["group", "id"], kind="stable")
    for group, rows in frame.groupby("group", sort=True):
        sides = {s: rows.loc[rows["published"] == s, "id"].tolist() for s in PRIORITY if (rows["published"] == s).any()}
        if len(sides) == 1:
            splits[group] = next(iter(sides))
            continue
        if conflict == "refuse":
            where = "; ".join(f"{s}: {', '.join(ids)}" for s, ids in sides.items())
            raise DataError(PARAMS_FILE, f"split.predefined_conflict is refuse and the published split puts "
                                         f"patient group {group!r} on several sides ({where}); fix the groups or "
                                         "set split.predefined_conflict: move")
        winner = splits[group] = _winner(sides, lost)
        for side, ids in sides.items():
            if side != winner:
                lost[side] += len(ids)
                lost[winner] -= len(ids)
        moves.append(Move(str(group), splits[group], sides))
    return Resolution(splits, moves)
