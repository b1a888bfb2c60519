"""Group-aware, class-stratified train/valid/test split.

Input: the converted manifest (one row per original image: id, group,
image_class) and the augmented manifest (id, source_id). Output, written to
``data/split/<name>.csv`` by the split stage and read back with
``read_split``: one table with a row per original and per augmented sample,

``id, source_id, group, image_class, kind (original|augmented), split, fold``

Groups the leak audit linked (``medseg.data.audit``: near-duplicate images
in different groups) are first merged, given as ``merged`` (group -> merged
group); the table's ``group`` column then holds the merged group's name.

Rules: every image of a group lands in one split; with ``predefined:
respect`` the split is the one the dataset was published in (the
manifest's ``published_split``), a group it puts on two sides moved whole
or refused (``medseg.data.predefined``), and a side it was published
without (valid, or test) drawn from its train groups; with ``test_groups``
(a published protocol) the groups it matches are the test set, else groups
are drawn per image-level class so each split keeps the class mix where counts allow;
augmented copies go to ``train`` when their source is in train and are
``unused`` otherwise, so valid and test hold originals only. With ``folds``
= k > 0, every group also gets a stratified group k-fold index (augmented
rows carry their source's fold) for cross-validation: in round ``r`` fold
``r`` is the test set, fold ``r+1 (mod k)`` the validation set and the rest
train, so every image is tested exactly once by a model that never saw it
or used it for model selection (see ``medseg.data.rounds``).
With ``labelled_fraction`` f < 1 the table has one more column,
``labelled`` (1 or 0): whether training uses the masks of the row's group
when the group is in train. Of the train groups (with folds: of each fold's
groups, so every round's train folds hold about f of its groups) a share f,
at least one, drawn per image class in an order seeded by ``labelled_seed``
alone, keep their masks; the others are unlabelled images for
semi-supervised training. A group is labelled or not as a whole and its
augmented copies follow their source. Valid and test are not touched: their
rows read 1 in the fixed split, and a group's masks always score it where it
is tested. At f = 1 the column is absent, so the table is the one written
before the feature existed.
Everything is a function of the inputs and the seeds.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from medseg.config import PARAMS_FILE, SplitConfig
from medseg.io.errors import DataError
from medseg.io.tables import read_csv, write_csv

from .predefined import Move, resolve

SPLITS = ("train", "valid", "test")
COLUMNS = ("id", "source_id", "group", "image_class", "kind", "split", "fold")
LABELLED = "labelled"  # the column that follows COLUMNS when split.labelled_fraction < 1


def _group_table(originals: pd.DataFrame) -> pd.DataFrame:
    """One row per group, labelled with its most frequent image class (ties: name order)."""
    counts = originals.groupby(["group", "image_class"]).size().reset_index(name="n")
    counts = counts.sort_values(["group", "n", "image_class"], ascending=[True, False, True])
    return counts.drop_duplicates("group")[["group", "image_class"]].reset_index(drop=True)


def _quotas(sizes: pd.Series, fraction: float, total: int) -> dict[str, int]:
    """Split ``round(fraction * total)`` over strata by largest remainder.

    At least one group is drawn when the fraction is positive and there are
    three or more groups, so small datasets still get a test set.
    """
    want = int(round(fraction * total))
    if fraction > 0 and total >= 3:
        want = max(want, 1)
    return _spread(sizes, want)


def _spread(sizes: pd.Series, want: int) -> dict[str, int]:
    """``want`` items over strata of ``sizes`` in proportion, by largest remainder, none above its stratum."""
    exact = sizes * (want / max(int(sizes.sum()), 1))
    base = np.floor(exact).astype(int)
    remainder = (exact - base).sort_values(ascending=False, kind="stable")
    for name in remainder.index[: want - int(base.sum())]:
        base[name] += 1
    return {k: int(min(v, sizes[k])) for k, v in base.items()}


def _stable_order(groups: pd.Series, seed: int | str) -> pd.Series:
    """Shuffle key per group that depends only on (seed, group name)."""
    return groups.map(lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())


def merge(originals: pd.DataFrame, merged: Mapping[str, str]) -> pd.DataFrame:
    """``originals`` with each group replaced by its merged group (groups not in ``merged`` stay)."""
    return originals.assign(group=originals["group"].map(lambda g: merged.get(g, g)))


def assign_groups(originals: pd.DataFrame, cfg: SplitConfig, merged: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Return a table group -> image_class, split, fold, with the groups of ``merged`` merged first.

    A merged group is in ``test_groups`` when any of its members is, so a
    published test set keeps every image it names.
    """
    merged = merged or {}
    groups = _group_table(merge(originals, merged))
    groups["key"] = _stable_order(groups["group"], cfg.seed)
    groups = groups.sort_values(["image_class", "key"]).reset_index(drop=True)
    groups["split"] = "train"
    total = len(groups)
    draws = (("test", cfg.test), ("valid", cfg.valid))
    if cfg.predefined == "respect":
        published = resolve(merge(originals, merged), cfg.predefined_conflict).splits
        groups["split"] = groups["group"].map(published)
        # A side the dataset was not published with (train/test only, say) is drawn from its train groups.
        draws = tuple((name, fraction) for name, fraction in draws if not (groups["split"] == name).any())
        total = int((groups["split"] == "train").sum())
    elif cfg.test_groups:
        tested = {merged.get(g, g) for g in originals["group"].unique() if re.search(cfg.test_groups, g)}
        named = groups["group"].isin(tested)
        if not named.any() or named.all():
            raise DataError(PARAMS_FILE, f"split.test_groups {cfg.test_groups!r} matches {int(named.sum())} of "
                                         f"{total} patient groups, e.g. {sorted(groups['group'])[:4]}")
        groups.loc[named, "split"] = "test"
        draws, total = (("valid", cfg.valid),), int((~named).sum())
    for name, fraction in draws:
        free = groups[groups["split"] == "train"]
        quota = _quotas(free.groupby("image_class").size(), fraction, total)
        for cls, n in quota.items():
            picked = free.index[free["image_class"] == cls][:n]
            groups.loc[picked, "split"] = name
    groups["fold"] = _folds(groups, cfg) if cfg.folds else -1
    if cfg.labelled_fraction < 1:
        groups[LABELLED] = _labelled(groups, cfg).astype(int)
    return groups.drop(columns="key")


def _labelled(groups: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
    """Per group, whether training uses its masks: a seeded share of each pool of train groups (see the module
    docstring); every group outside the pools (valid and test of the fixed split) is labelled."""
    pools = ([groups.index[groups["fold"] == k] for k in range(cfg.folds)] if cfg.folds
             else [groups.index[groups["split"] == "train"]])
    key = _stable_order(groups["group"], f"labelled:{cfg.labelled_seed}")
    labelled = pd.Series(True, index=groups.index)
    for pool in pools:
        part = groups.loc[pool, ["image_class"]].assign(key=key[pool]).sort_values(["image_class", "key"])
        labelled[pool] = False
        want = max(1, int(round(cfg.labelled_fraction * len(pool))))
        for cls, n in _spread(part.groupby("image_class").size(), want).items():
            labelled[part.index[part["image_class"] == cls][:n]] = True
    return labelled


def labelled(rows: pd.DataFrame) -> pd.Series:
    """Per row of the split table (written or read back as text): whether training may use its mask."""
    if LABELLED not in rows:
        return pd.Series(True, index=rows.index)
    return rows[LABELLED].astype(int) == 1


def predefined_moves(originals: pd.DataFrame, cfg: SplitConfig,
                     merged: Mapping[str, str] | None = None) -> list[Move]:
    """The groups ``predefined: respect`` moves off their published split (none with ``ignore``)."""
    if cfg.predefined != "respect":
        return []
    return resolve(merge(originals, merged or {}), cfg.predefined_conflict).moves


def _folds(groups: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    fold = np.full(len(groups), -1)
    pool = groups.index
    if len(pool) < cfg.folds:
        raise ValueError(f"split.folds={cfg.folds} but only {len(pool)} groups")
    # Groups are already unique here, so StratifiedGroupKFold reduces to a
    # stratified k-fold; it keeps working if several rows share a group.
    kfold = StratifiedGroupKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed)
    labels = groups.loc[pool, "image_class"].to_numpy()
    names = groups.loc[pool, "group"].to_numpy()
    for k, (_, held) in enumerate(kfold.split(np.zeros(len(pool)), labels, names)):
        fold[pool[held]] = k
    return fold


def split_table(originals: pd.DataFrame, augmented: pd.DataFrame, cfg: SplitConfig,
                merged: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The full split table for originals and augmented copies; ``merged``: groups the audit joined."""
    groups = assign_groups(originals, cfg, merged).set_index("group")
    originals = merge(originals, merged or {})
    orig = originals[["id", "group", "image_class"]].assign(source_id=originals["id"], kind="original")
    orig["split"] = orig["group"].map(groups["split"])
    orig["fold"] = orig["group"].map(groups["fold"])
    columns = list(COLUMNS)
    if LABELLED in groups:
        orig[LABELLED] = orig["group"].map(groups[LABELLED])
        columns.append(LABELLED)
    by_source = orig.set_index("id")
    unknown = set(augmented["source_id"]) - set(by_source.index)
    if unknown:
        raise ValueError(f"augmented samples refer to unknown source ids, e.g. {sorted(unknown)[:3]}")
    aug = pd.DataFrame({
        "id": augmented["id"],
        "group": augmented["source_id"].map(by_source["group"]),
        "image_class": augmented["source_id"].map(by_source["image_class"]),
        "source_id": augmented["source_id"],
        "kind": "augmented",
        "split": augmented["source_id"].map(by_source["split"]).where(lambda s: s == "train", "unused"),
        "fold": augmented["source_id"].map(by_source["fold"]),
    })
    if LABELLED in columns:
        aug[LABELLED] = augmented["source_id"].map(by_source[LABELLED])
    table = pd.concat([orig, aug], ignore_index=True)
    table = table[columns]
    return table.sort_values(["kind", "id"], ascending=[False, True], kind="stable").reset_index(drop=True)


def write_split(path: Path, table: pd.DataFrame) -> None:
    write_csv(path, table)


def read_split(path: Path) -> pd.DataFrame:
    """The split table as text cells (``fold`` included: compare it with ``Round.fold`` as ``int``)."""
    return read_csv(path)
