"""split.predefined: a published split kept as published, except that a patient group never crosses it."""
from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from conftest import REPO, shared_dataset
from medseg.config import ArchiveLimits, SplitConfig, load_params
from medseg.data.audit import Audit, audit_record
from medseg.data.split import predefined_moves, split_table
from medseg.formats.discover import discover
from medseg.io.errors import DataError
from medseg.sources.archive import extract_archive

RESPECT = SplitConfig(predefined="respect")


def published(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """(id, group, published split) rows as the converted manifest has them."""
    return pd.DataFrame([{"id": i, "group": g, "image_class": "x", "published_split": s} for i, g, s in rows])


NO_COPIES = pd.DataFrame(columns=["id", "source_id"])


def splits(table: pd.DataFrame) -> dict[str, str]:
    return table.set_index("id")["split"].to_dict()


def test_a_group_across_train_and_test_moves_whole_to_its_majority_side():
    orig = published([("a1", "a", "train"), ("a2", "a", "train"), ("a3", "a", "test"),
                      ("b1", "b", "test"), ("c1", "c", "valid"), ("d1", "d", "train")])
    table = split_table(orig, NO_COPIES, RESPECT)
    assert splits(table) == {"a1": "train", "a2": "train", "a3": "train", "b1": "test", "c1": "valid",
                             "d1": "train"}
    moves = predefined_moves(orig, RESPECT)
    assert [(m.group, m.to, m.sides) for m in moves] == [("a", "train", {"test": ["a3"], "train": ["a1", "a2"]})]


@pytest.mark.parametrize(("sides", "winner"), [(("train", "test"), "test"), (("valid", "test"), "test"),
                                               (("train", "valid"), "valid")])
def test_a_first_tie_goes_to_the_side_earlier_in_test_valid_train(sides, winner):
    orig = published([("a1", "a", sides[0]), ("a2", "a", sides[1]), ("b1", "b", "train")])
    table = split_table(orig, NO_COPIES, RESPECT)
    assert splits(table) == {"a1": winner, "a2": winner, "b1": "train"}


def test_later_ties_go_to_the_side_that_lost_most_so_the_published_sizes_hold():
    # a and b are each one eye in train, one in test; c is a 2-1 majority for train.
    orig = published([("a1", "a", "train"), ("a2", "a", "test"), ("b1", "b", "train"), ("b2", "b", "test"),
                      ("c1", "c", "train"), ("c2", "c", "train"), ("c3", "c", "test"),
                      ("d1", "d", "test"), ("e1", "e", "train"), ("f1", "f", "valid")])
    table = splits(split_table(orig, NO_COPIES, RESPECT))
    # a: tie, nothing lost yet -> test (PRIORITY); train has now lost one, so b's tie -> train; c: majority
    assert {k: v for k, v in table.items() if k[0] in "abc"} == {
        "a1": "test", "a2": "test", "b1": "train", "b2": "train", "c1": "train", "c2": "train", "c3": "train"}
    assert [(m.group, m.to) for m in predefined_moves(orig, RESPECT)] == [("a", "test"), ("b", "train"),
                                                                          ("c", "train")]


def test_a_side_published_without_is_drawn_from_the_train_groups():
    # Published as train/test only (as several collection sets are): valid comes from train's groups, test stays.
    orig = published([(f"t{g:02d}_{k}", f"t{g:02d}", "train") for g in range(20) for k in range(2)]
                     + [("x1", "x", "test"), ("x2", "x", "train"), ("x3", "x", "train"), ("y1", "y", "test")])
    table = split_table(orig, NO_COPIES, SplitConfig(predefined="respect", valid=0.2, seed=3))
    by_group = table.groupby("group")["split"].agg(set)
    assert all(len(s) == 1 for s in by_group)  # every group whole
    assert by_group.map(min).value_counts().to_dict() == {"train": 17, "valid": 4, "test": 1}
    assert by_group["y"] == {"test"} and by_group["x"] in ({"train"}, {"valid"})  # x: 2-1 for train, moved whole
    # Published train/valid only: the test set is drawn from train, valid stays as published.
    orig = published([(f"t{g:02d}", f"t{g:02d}", "train") for g in range(10)] + [("v1", "v", "valid")])
    table = split_table(orig, NO_COPIES, SplitConfig(predefined="respect", test=0.2, seed=3))
    assert table.groupby("split")["group"].nunique().to_dict() == {"test": 2, "train": 8, "valid": 1}


def test_refuse_names_the_group_and_the_files_on_each_side():
    orig = published([("Image_02L", "02", "train"), ("Image_02R", "02", "test"), ("Image_01L", "01", "train")])
    with pytest.raises(DataError, match=r"'02'.*test: Image_02R; train: Image_02L"):
        split_table(orig, NO_COPIES, SplitConfig(predefined="respect", predefined_conflict="refuse"))


def test_groups_the_audit_merged_are_resolved_as_one():
    orig = published([("a1", "a", "train"), ("b1", "b", "test"), ("b2", "b", "test")])
    table = split_table(orig, NO_COPIES, RESPECT, merged={"a": "a+b", "b": "a+b"})
    assert set(table["split"]) == {"test"} and set(table["group"]) == {"a+b"}
    assert [m.group for m in predefined_moves(orig, RESPECT, {"a": "a+b", "b": "a+b"})] == ["a+b"]


def test_ignore_leaves_the_published_split_unused():
    orig = published([(f"p{g:02d}_{k}", f"p{g:02d}", "test") for g in range(20) for k in range(2)])
    cfg = SplitConfig(valid=0.2, test=0.2, seed=1)
    table = split_table(orig, NO_COPIES, cfg)
    assert table.groupby("split")["group"].nunique().to_dict() == {"test": 4, "train": 12, "valid": 4}
    assert predefined_moves(orig, cfg) == []


def test_augmented_copies_follow_their_source_into_train_only():
    orig = published([("a1", "a", "train"), ("a2", "a", "test"), ("a3", "a", "train"), ("b1", "b", "valid")])
    copies = pd.DataFrame({"id": ["a2__aug00", "b1__aug00"], "source_id": ["a2", "b1"]})
    table = split_table(orig, copies, RESPECT)
    assert splits(table)["a2__aug00"] == "train" and splits(table)["b1__aug00"] == "unused"


def test_respect_without_a_published_split_is_an_error():
    orig = published([("a1", "a", "train"), ("b1", "b", "")])
    with pytest.raises(DataError, match=r"no published split.*b1.*layout.split_folders"):
        split_table(orig, NO_COPIES, RESPECT)


def test_moves_are_listed_in_the_audit_record():
    orig = published([("a1", "a", "train"), ("a2", "a", "test"), ("a3", "a", "test")])
    orig = orig.assign(image=["images/a1.png", "images/a2.png", "images/a3.png"])
    record = audit_record(Audit(RESPECT.audit, 3, 1), orig, predefined_moves(orig, RESPECT))
    assert record["predefined_moves"] == [{"group": "a", "to": "test",
                                           "published": {"test": ["a2", "a3"], "train": ["a1"]}}]


@pytest.mark.parametrize(("extra", "message"), [({"folds": 5}, "cross-validation"),
                                                ({"test_groups": "^1"}, "test_groups")])
def test_respect_with_folds_or_test_groups_is_a_schema_error(extra, message):
    with pytest.raises(ValidationError, match=message):
        SplitConfig(predefined="respect", **extra)


def test_the_shared_tsd_archives_keep_each_child_in_one_split(tmp_path):
    src = shared_dataset("tsd-retinal-vessel-7z")
    for name in ("train", "valid", "test"):  # as fetch unpacks them: data/raw/<dataset>/<name>/<name>/images
        extract_archive(src / f"{name}.7z.001", tmp_path / "raw" / name, ArchiveLimits())
    params = load_params(REPO / "params.yaml")
    found = discover(tmp_path / "raw", params.dataset("tsd-retinal-vessel-7z").convert)
    assert not found.problems and len(found.samples) == 28
    orig = pd.DataFrame([{"id": s.id, "group": s.group, "image_class": "fundus",
                          "published_split": s.published_split} for s in found.samples])
    assert orig["published_split"].value_counts().to_dict() == {"train": 16, "test": 7, "valid": 5}
    cfg = params.sections("tsd-retinal-vessel-7z")["split"]
    table = split_table(orig, NO_COPIES, cfg)
    assert (table.groupby("group")["split"].nunique() == 1).all() and table["group"].nunique() == 14
    moves = predefined_moves(orig, cfg)
    assert sorted(m.group for m in moves) == ["02", "03", "04", "06", "08", "09", "11", "12", "13"]
    assert table["split"].value_counts().to_dict() == SHARED_SIZES


# Every moved child is a 1-1 tie (two eyes); the tie rule keeps the published 16/5/7 as closely as it can.
SHARED_SIZES = {"train": 16, "valid": 4, "test": 8}
