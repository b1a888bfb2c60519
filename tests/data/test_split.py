"""Group-aware split: no patient crosses splits, augmented copies stay in train."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from medseg.config import SplitConfig
from medseg.data.rounds import Round, rounds
from medseg.data.split import COLUMNS, LABELLED, read_split, split_table, write_split
from medseg.io.errors import DataError


def originals(n_groups=30, per_group=2, classes=("benign", "malignant", "normal")) -> pd.DataFrame:
    rows = []
    for g in range(n_groups):
        for k in range(per_group):
            rows.append({"id": f"p{g:02d}_{k}", "group": f"p{g:02d}", "image_class": classes[g % len(classes)]})
    return pd.DataFrame(rows)


def augmented(orig: pd.DataFrame, copies=3) -> pd.DataFrame:
    rows = [{"id": f"{i}__aug{c:02d}", "source_id": i} for i in orig["id"] for c in range(copies)]
    return pd.DataFrame(rows, columns=["id", "source_id"])


def test_groups_never_cross_and_augmented_only_in_train():
    orig = originals()
    table = split_table(orig, augmented(orig), SplitConfig(valid=0.2, test=0.2, seed=1))
    assert (table.groupby("group")["split"].apply(lambda s: set(s) - {"unused"}).map(len) == 1).all()
    aug = table[table["kind"] == "augmented"]
    src_split = table[table["kind"] == "original"].set_index("id")["split"]
    assert set(aug["split"]) == {"train", "unused"}
    assert (aug["split"] == "train").eq(aug["source_id"].map(src_split) == "train").all()
    for name in ("valid", "test"):
        assert set(table.loc[table["split"] == name, "kind"]) == {"original"}


def test_sizes_and_stratification():
    orig = originals(n_groups=30)
    table = split_table(orig, augmented(orig, 0), SplitConfig(valid=0.2, test=0.2, seed=3))
    per_group = table.drop_duplicates("group")
    assert per_group["split"].value_counts().to_dict() == {"train": 18, "valid": 6, "test": 6}
    # 10 groups per class: each class gets 2 test and 2 valid groups.
    counts = per_group.groupby(["split", "image_class"]).size()
    assert set(counts.loc["test"]) == {2} and set(counts.loc["valid"]) == {2}


def test_deterministic_and_seed_dependent():
    orig = originals()
    a = split_table(orig, augmented(orig), SplitConfig(seed=5))
    b = split_table(orig.sample(frac=1, random_state=0), augmented(orig).iloc[::-1], SplitConfig(seed=5))
    assert a.equals(b)  # input order does not matter
    c = split_table(orig, augmented(orig), SplitConfig(seed=6))
    assert not a["split"].equals(c["split"])


def test_tiny_dataset_still_gets_a_test_group():
    orig = originals(n_groups=4, classes=("x",))
    table = split_table(orig, augmented(orig, 1), SplitConfig(valid=0.1, test=0.1))
    assert set(table.drop_duplicates("group")["split"]) == {"train", "valid", "test"}


def test_kfold_over_all_groups():
    orig = originals(n_groups=30)
    table = split_table(orig, augmented(orig, 2), SplitConfig(valid=0.2, test=0.2, folds=4))
    orig_rows = table[table["kind"] == "original"]
    assert sorted(orig_rows["fold"].unique()) == [0, 1, 2, 3]
    assert (orig_rows.groupby("group")["fold"].nunique() == 1).all()
    assert orig_rows.groupby("fold")["group"].nunique().between(7, 8).all()
    aug = table[table["kind"] == "augmented"]
    assert (aug["fold"].values == aug["source_id"].map(orig_rows.set_index("id")["fold"]).values).all()


def test_cross_validation_rounds_test_every_image_once():
    orig = originals(n_groups=30)
    table = split_table(orig, augmented(orig, 2), SplitConfig(folds=5))
    tested = []
    for round_ in rounds(5):
        rows = round_.select(table)
        groups = {name: set(part["group"]) for name, part in rows.items()}
        assert not (groups["train"] & groups["valid"]) and not (groups["train"] & groups["test"])
        assert not (groups["valid"] & groups["test"])
        assert set(rows["valid"]["kind"]) == {"original"} == set(rows["test"]["kind"])
        assert "augmented" in set(rows["train"]["kind"])
        tested += list(rows["test"]["id"])
    assert sorted(tested) == sorted(orig["id"])


def test_unknown_augmented_source_is_refused():
    orig = originals(n_groups=3)
    with pytest.raises(ValueError, match="unknown source ids"):
        split_table(orig, pd.DataFrame([{"id": "x__aug00", "source_id": "ghost"}]), SplitConfig())


def test_a_round_names_its_files_and_metrics():
    fixed, second = Round(), Round(1)
    assert rounds(0) == [fixed] and rounds(3) == [Round(0), Round(1), Round(2)]
    assert (fixed.checkpoint, fixed.prefix, fixed.fold, fixed.picture(3)) == ("model.pt", "", -1, "epoch_003.png")
    assert (second.checkpoint, second.prefix, second.fold, second.key) == ("model_fold1.pt", "fold1.", 1, "fold1")
    assert second.picture(12) == "fold1_epoch_012.png"
    assert Round.from_fold(-1) == fixed and Round.from_fold(1) == second


def test_the_split_file_round_trips_as_text(tmp_path):
    orig = originals(n_groups=12)
    table = split_table(orig, augmented(orig, 1), SplitConfig(folds=3))
    write_split(tmp_path / "split.csv", table)
    back = read_split(tmp_path / "split.csv")
    assert list(back.columns) == list(table.columns)
    # Rounds select the same rows from the text table the stage reads as from the one it wrote.
    for round_ in rounds(3):
        assert {k: sorted(v["id"]) for k, v in round_.select(back).items()} == \
            {k: sorted(v["id"]) for k, v in round_.select(table).items()}


def test_a_round_beyond_the_folds_is_refused():
    orig = originals(n_groups=9)
    table = split_table(orig, augmented(orig, 1), SplitConfig(folds=3))
    with pytest.raises(ValueError, match="round 3 does not exist"):
        Round(3).select(table)


def test_named_test_groups_are_the_test_set_and_valid_comes_from_the_rest():
    orig = originals(n_groups=20)
    table = split_table(orig, augmented(orig, 1), SplitConfig(test_groups=r"^p1[0-4]$", valid=0.2))
    groups = table[table["kind"] == "original"].groupby("split")["group"].unique()
    assert sorted(groups["test"]) == sorted(g for g in orig["group"].unique() if re.search(r"^p1[0-4]$", g))
    assert len(groups["valid"]) == round(0.2 * (20 - len(groups["test"])))
    with pytest.raises(DataError, match="matches 0 of 20"):
        split_table(orig, augmented(orig, 1), SplitConfig(test_groups="^nobody$"))


# --------------------------------------------------------------------------- labelled_fraction
def _group_flags(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["kind"] == "original"].drop_duplicates("group").set_index("group")


def test_a_labelled_fraction_keeps_the_masks_of_that_share_of_train_groups_whole():
    orig = originals(n_groups=40)
    table = split_table(orig, augmented(orig), SplitConfig(valid=0.2, test=0.2, labelled_fraction=0.25))
    assert list(table.columns) == [*COLUMNS, LABELLED]
    assert (table.groupby("group")[LABELLED].nunique() == 1).all()  # no group partly labelled
    groups = _group_flags(table)
    train = groups[groups["split"] == "train"]
    assert int(train[LABELLED].sum()) == round(0.25 * len(train))
    assert set(train.loc[train[LABELLED] == 1, "image_class"]) == {"benign", "malignant", "normal"}
    assert (groups.loc[groups["split"] != "train", LABELLED] == 1).all()  # valid and test untouched
    aug = table[table["kind"] == "augmented"]
    assert (aug[LABELLED].values == aug["source_id"].map(table.set_index("id")[LABELLED]).values).all()
    rows = Round().select(table)
    assert set(rows["unlabelled"]["group"]) == set(train.index[train[LABELLED] == 0])
    assert set(rows["train"]["group"]) == set(train.index[train[LABELLED] == 1])
    assert "augmented" in set(rows["unlabelled"]["kind"])  # copies of unlabelled sources are unlabelled images


def test_the_labelled_draw_is_seeded_by_its_own_seed_and_leaves_the_split_alone():
    orig = originals(n_groups=40)
    draw = {seed: split_table(orig, augmented(orig, 1), SplitConfig(labelled_fraction=0.2, labelled_seed=seed))
            for seed in (1, 2)}
    again = split_table(orig.iloc[::-1], augmented(orig, 1), SplitConfig(labelled_fraction=0.2, labelled_seed=1))
    assert draw[1].equals(again)
    assert not draw[1][LABELLED].equals(draw[2][LABELLED])
    full = split_table(orig, augmented(orig, 1), SplitConfig())
    for table in draw.values():
        assert table[list(COLUMNS)].equals(full)  # same train, valid and test groups


def test_at_least_one_train_group_keeps_its_masks():
    orig = originals(n_groups=12)
    groups = _group_flags(split_table(orig, augmented(orig, 0), SplitConfig(labelled_fraction=0.01)))
    assert int(groups.loc[groups["split"] == "train", LABELLED].sum()) == 1


def test_with_folds_each_fold_keeps_the_share_and_every_round_has_both_kinds(tmp_path):
    orig = originals(n_groups=30)
    table = split_table(orig, augmented(orig, 1), SplitConfig(folds=5, labelled_fraction=0.34))
    groups = _group_flags(table)
    for _, fold in groups.groupby("fold"):
        assert int(fold[LABELLED].sum()) == round(0.34 * len(fold))
    for round_ in rounds(5):
        rows = round_.select(table)
        assert len(rows["train"]) and len(rows["unlabelled"])
        assert not set(rows["train"]["group"]) & set(rows["unlabelled"]["group"])
        assert set(rows["test"]["group"]) == set(groups.index[groups["fold"] == round_.index])
    write_split(tmp_path / "split.csv", table)
    back = read_split(tmp_path / "split.csv")  # text cells, as train reads it
    assert {k: sorted(v["id"]) for k, v in Round(2).select(back).items()} == \
        {k: sorted(v["id"]) for k, v in Round(2).select(table).items()}


def test_labelled_fraction_one_writes_the_table_without_the_feature(tmp_path):
    orig = originals(n_groups=20)
    default = split_table(orig, augmented(orig), SplitConfig(folds=3))
    seeded = split_table(orig, augmented(orig), SplitConfig(folds=3, labelled_fraction=1.0, labelled_seed=99))
    write_split(tmp_path / "a.csv", default)
    write_split(tmp_path / "b.csv", seeded)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert list(default.columns) == list(COLUMNS)
    assert all(len(Round(r).select(read_split(tmp_path / "a.csv"))["unlabelled"]) == 0 for r in range(3))
