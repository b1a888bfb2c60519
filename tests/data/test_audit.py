"""Leak audit: near-duplicates across patient groups are found (also mirrored, inverted, re-encoded), merged
before the split or refused, and written down; distinct images, generated or real, are left alone."""
from __future__ import annotations

import copy
import importlib.util
import json
import logging
import re
import time

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, shared_dataset
from medseg.config import AuditConfig, PlanConfig, SplitConfig, load_params
from medseg.data import converted, shards
from medseg.data.audit import (
                               Match,
                               audit_duplicates,
                               audit_record,
                               cross_group_matches,
                               distances,
                               hash_images,
                               merge_groups,
                               variant_hashes,
                               write_audit,
)
from medseg.data.converted import ConvertedDataset
from medseg.data.plans import params_digest, write_plan
from medseg.data.split import split_table
from medseg.io import paths
from medseg.io.errors import DataError
from medseg.io.images import read_image
from medseg.plan.rules import Shares, plan_sections
from medseg.sources.synthetic import generate

CLASSES = ["background", "lesion"]
FINGERPRINT = {"images": 13, "channels": 1, "shape": {"median": [72, 96]},
               "classes": {"lesion": {"pixel_fraction": 0.1, "width_px": {"median": 10.0, "p10": 5.0}}}}
DEFAULT = AuditConfig()
SIZE = DEFAULT.hash_size


def smooth(seed: int, h: int = 72, w: int = 96) -> np.ndarray:
    """A smooth random picture (structure at a few pixels' scale up to the whole image)."""
    rng = np.random.default_rng(seed)
    field = cv2.resize(rng.normal(size=(h // 8, w // 8)), (w, h), interpolation=cv2.INTER_CUBIC)
    field += 0.15 * rng.normal(size=(h, w))
    return cv2.normalize(field, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def noise(seed: int, h: int = 72, w: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def write_converted(root, images: dict[str, tuple[str, np.ndarray]]) -> ConvertedDataset:
    """A converted dataset of grey images: id -> (group, image), empty labels."""
    converted.create(root)
    rows = []
    for sid, (group, image) in images.items():
        label = np.zeros(image.shape[:2], np.uint8)
        converted.write_sample(root, sid, image, label)
        rows.append(converted.manifest_row(sid, group, "x", image.shape[:2], f"raw/{sid}.jpg", f"raw/{sid}.png",
                                           [label.size, 0], CLASSES))
    converted.write_manifest(root, rows)
    converted.write_report(root, {"classes": CLASSES, "channels": 1})
    return ConvertedDataset(root)


def distinct(n: int, first_seed: int = 0) -> dict[str, tuple[str, np.ndarray]]:
    """``n`` distinct smooth pictures, each its own group ``g<k>``."""
    return {f"img{k:02d}": (f"g{k:02d}", smooth(first_seed + k)) for k in range(n)}


# --------------------------------------------------------------------------- what is caught
def test_a_copy_in_another_group_is_found_and_the_groups_merged(tmp_path) -> None:
    images = distinct(6)
    images["copy"] = ("g04", images["img01"][1].copy())
    audit = audit_duplicates(write_converted(tmp_path / "c", images), DEFAULT)
    assert audit.matches == [Match("copy", "img01", "g04", "g01", 0, "same")]
    assert audit.merged == {"g01": "g01+g04", "g04": "g01+g04"}
    assert audit.closest == 0 and audit.groups == 6 and audit.images == 7


@pytest.mark.parametrize(("variant", "make"), [("flip", lambda im: im[:, ::-1]), ("inversion", lambda im: 255 - im)])
def test_a_flipped_or_inverted_copy_is_caught(tmp_path, variant, make) -> None:
    images = distinct(6)
    original = images["img02"][1]
    images["twin"] = ("g05", np.ascontiguousarray(make(original)))
    own = variant_hashes(original, SIZE)[0]
    assert (own != variant_hashes(images["twin"][1], SIZE)[0]).sum() > DEFAULT.max_distance  # plain hashes differ
    audit = audit_duplicates(write_converted(tmp_path / "c", images), DEFAULT)
    assert [(m.a, m.b, m.variant) for m in audit.matches] == [("img02", "twin", variant)]
    assert audit.matches[0].distance <= 2  # a coefficient at the median may flip: distances are even
    assert set(audit.merged.values()) == {"g02+g05"}


def test_a_jpeg_reencoding_is_caught(tmp_path) -> None:
    images = distinct(6)
    scan = images["img03"][1].copy()
    cv2.circle(scan, (40, 30), 12, 30, -1)  # a dark lesion with sharp edges, where JPEG errs most
    images["img03"] = ("g03", scan)
    images["reencoded"] = ("g00", jpeg(scan, 75))
    audit = audit_duplicates(write_converted(tmp_path / "c", images), DEFAULT)
    assert [(m.a, m.b, m.variant) for m in audit.matches] == [("img03", "reencoded", "same")]
    assert audit.matches[0].distance <= DEFAULT.max_distance // 2


def test_distinct_random_and_smooth_images_are_not_merged() -> None:
    pictures = [smooth(seed) for seed in range(40)] + [noise(seed) for seed in range(40)]
    pictures += [cv2.GaussianBlur(noise(100 + s), (0, 0), 3) for s in range(20)]
    hashes = np.stack([variant_hashes(p, SIZE) for p in pictures])
    ids = [f"i{k:03d}" for k in range(len(pictures))]
    matches, closest = cross_group_matches(ids, ids, hashes, DEFAULT.max_distance)
    assert matches == [] and closest > DEFAULT.max_distance + 2


def test_images_of_one_group_are_never_matched(tmp_path) -> None:
    images = distinct(4)
    images["again"] = ("g01", images["img01"][1].copy())  # the same picture twice within a patient is no leak
    audit = audit_duplicates(write_converted(tmp_path / "c", images), DEFAULT)
    assert audit.matches == [] and audit.merged == {}


def test_blocks_give_the_same_matches_as_one_pass() -> None:
    pictures = [smooth(s) for s in range(30)]
    pictures += [pictures[3][:, ::-1], 255 - pictures[7], pictures[3].copy()]
    hashes = np.stack([variant_hashes(np.ascontiguousarray(p), SIZE) for p in pictures])
    ids = [f"i{k:02d}" for k in range(len(pictures))]
    whole = cross_group_matches(ids, ids, hashes, DEFAULT.max_distance, block=1000)
    assert cross_group_matches(ids, ids, hashes, DEFAULT.max_distance, block=7) == whole
    assert {(m.a, m.b, m.variant) for m in whole[0]} == {("i03", "i30", "flip"), ("i07", "i31", "inversion"),
                                                        ("i03", "i32", "same"), ("i30", "i32", "flip")}


def test_distances_are_symmetric_and_zero_on_the_diagonal() -> None:
    hashes = np.stack([variant_hashes(smooth(s), SIZE) for s in range(12)])
    dist, _ = distances(hashes)
    assert (dist == dist.T).all() and (np.diag(dist) == 0).all()


def test_hashing_hundreds_of_images_takes_seconds(tmp_path) -> None:
    images = {f"i{k:03d}": (f"g{k:03d}", smooth(k, 300, 300)) for k in range(300)}
    dataset = write_converted(tmp_path / "c", images)
    start = time.perf_counter()
    hash_images([dataset.root / p for p in dataset.manifest["image"]], SIZE)
    assert time.perf_counter() - start < 10


# --------------------------------------------------------------------------- merging, refusing, off
def test_merging_is_transitive_and_independent_of_order() -> None:
    links = [Match("a", "b", "p1", "p2", 0, "same"), Match("c", "d", "p3", "p2", 2, "flip"),
             Match("e", "f", "p9", "p8", 1, "inversion"), Match("g", "h", "p4", "p1", 3, "same")]
    merged = merge_groups(links)
    assert merged == {"p1": "p1+p2+p3+p4", "p2": "p1+p2+p3+p4", "p3": "p1+p2+p3+p4", "p4": "p1+p2+p3+p4",
                      "p8": "p8+p9", "p9": "p8+p9"}
    assert merge_groups(links[::-1]) == merged and merge_groups(links[1:] + links[:1]) == merged
    assert merge_groups([]) == {}


def test_refuse_names_both_files_and_the_distance(tmp_path) -> None:
    images = distinct(5)
    images["twin"] = ("g03", images["img00"][1][:, ::-1].copy())
    dataset = write_converted(tmp_path / "c", images)
    with pytest.raises(DataError) as caught:
        audit_duplicates(dataset, AuditConfig(duplicates="refuse"))
    message = str(caught.value)
    assert "images/img00.png (from raw/img00.jpg) (group g00)" in message
    assert "images/twin.png (from raw/twin.jpg) (group g03)" in message
    assert re.search(r"flip, distance [02]\b", message) and "split.audit.duplicates" in message


def test_off_hashes_nothing(tmp_path, monkeypatch) -> None:
    images = distinct(3)
    images["copy"] = ("g02", images["img00"][1].copy())
    monkeypatch.setattr("medseg.data.audit.hash_images", lambda _: pytest.fail("hashed although off"))
    audit = audit_duplicates(write_converted(tmp_path / "c", images), AuditConfig(duplicates="off"))
    assert audit.matches == [] and audit.merged == {} and audit.closest is None


def test_bad_audit_params_are_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="'merge', 'refuse' or 'off'"):
        AuditConfig(duplicates="drop")
    with pytest.raises(ValueError, match="below the 64 bits"):
        AuditConfig(hash_size=8, max_distance=64)
    with pytest.raises(ValueError, match="less than or equal to 32"):
        AuditConfig(hash_size=40)


# --------------------------------------------------------------------------- merged groups and the split
def originals(n_groups: int = 30) -> pd.DataFrame:
    rows = [{"id": f"p{g:02d}_{k}", "group": f"p{g:02d}", "image_class": ("a", "b", "c")[g % 3]}
            for g in range(n_groups) for k in range(2)]
    return pd.DataFrame(rows)


def augmented(orig: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{"id": f"{i}__aug00", "source_id": i} for i in orig["id"]])


MERGED = {"p00": "p00+p07+p15", "p07": "p00+p07+p15", "p15": "p00+p07+p15", "p03": "p03+p20", "p20": "p03+p20"}


@pytest.mark.parametrize("cfg", [SplitConfig(valid=0.2, test=0.2), SplitConfig(folds=5),
                                 SplitConfig(test_groups=r"^p1[0-5]$")], ids=["fixed", "folds", "test_groups"])
def test_merged_groups_land_on_one_side_of_every_split_and_fold(cfg) -> None:
    orig = originals()
    table = split_table(orig, augmented(orig), cfg, MERGED)
    rows = table[table["kind"] == "original"].set_index("id")
    for members in (["p00", "p07", "p15"], ["p03", "p20"]):
        ids = [i for i in orig["id"] if i.split("_")[0] in members]
        assert rows.loc[ids, "split"].nunique() == 1 and rows.loc[ids, "fold"].nunique() == 1
        assert set(rows.loc[ids, "group"]) == {"+".join(members)}
    assert table.groupby("group")["split"].apply(lambda s: len(set(s) - {"unused"})).max() == 1
    assert table[table["kind"] == "original"]["group"].nunique() == 30 - 3
    if cfg.test_groups:  # p15 is named, so its merged group (with p00 and p07) is tested, and nothing else joins
        tested = set(rows.loc[rows["split"] == "test", "group"])
        assert tested == {f"p{g}" for g in range(10, 15)} | {"p00+p07+p15"}


def test_without_merges_the_split_is_unchanged() -> None:
    orig = originals()
    cfg = SplitConfig(folds=5)
    assert split_table(orig, augmented(orig), cfg, {}).equals(split_table(orig, augmented(orig), cfg))


# --------------------------------------------------------------------------- the audit file and the stage
def test_the_audit_file_lists_every_merge_with_counts(tmp_path) -> None:
    images = distinct(6)
    images["flipped"] = ("g04", images["img01"][1][:, ::-1].copy())
    images["negative"] = ("g05", 255 - images["flipped"][1])
    dataset = write_converted(tmp_path / "c", images)
    audit = audit_duplicates(dataset, DEFAULT)
    write_audit(tmp_path / "audit.json", audit, dataset.manifest)
    record = json.loads((tmp_path / "audit.json").read_text())
    assert record == audit_record(audit, dataset.manifest)
    assert record["duplicates"] == "merge" and record["max_distance"] == DEFAULT.max_distance
    assert record["hash_size"] == SIZE
    assert record["counts"] == {"images": 8, "groups": 6, "matches": 2,
                                "by_variant": {"same": 0, "flip": 1, "inversion": 1},
                                "merged_groups": 1, "groups_after": 4}
    first = record["matches"][0]
    assert first["a"] == {"id": "flipped", "image": "images/flipped.png", "source_image": "raw/flipped.jpg",
                          "group": "g04"}
    # The negative of the mirror image matches neither variant of img01: it joins img01's group through "flipped".
    assert [(m["a"]["id"], m["b"]["id"], m["variant"]) for m in record["matches"]] == [
        ("flipped", "img01", "flip"), ("flipped", "negative", "inversion")]
    assert all(m["merged_group"] == "g01+g04+g05" and m["distance"] <= 2 for m in record["matches"])
    assert record["merged_groups"] == [{"group": "g01+g04+g05", "members": ["g01", "g04", "g05"]}]
    assert record["closest_cross_group_distance"] == 0


def split_stage():
    spec = importlib.util.spec_from_file_location("split_stage", REPO / "stages" / "split.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_inputs(root, duplicates: str, folds: int, **split) -> None:
    """params.yaml, the plan, a converted dataset with a flipped copy across groups and its augmented manifest
    for the ``synthetic`` dataset, under ``root`` laid out as the repository; ``split``: that profile's own
    split knobs."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["split"].update(folds=folds)
    raw["datasets"]["synthetic"].setdefault("split", {}).update(split)
    raw["split"]["audit"]["duplicates"] = duplicates
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(root / "params.yaml")
    sections = {name: s.model_dump() for name, s in params.sections("synthetic").items()}
    resolved, record = plan_sections(FINGERPRINT, copy.deepcopy(sections), PlanConfig(), 1, Shares(0.6, 0.1), 4, {})
    write_plan(root / paths.plan_file("synthetic"), "synthetic", resolved,
               {"params_digest": params_digest("synthetic", params), **record})
    images = distinct(12)
    images["twin"] = ("g09", images["img02"][1][:, ::-1].copy())
    dataset = write_converted(root / paths.converted_dir("synthetic"), images)
    (root / paths.augmented_dir("synthetic")).mkdir(parents=True)
    augmented(dataset.manifest).to_csv(root / paths.augmented_dir("synthetic") / shards.MANIFEST, index=False)


def test_the_stage_merges_writes_the_audit_and_keeps_the_twins_together(tmp_path, monkeypatch) -> None:
    stage_inputs(tmp_path, "merge", folds=3)
    monkeypatch.chdir(tmp_path)
    stage = split_stage()
    stage.run_stage(stage.main, ["synthetic", "--params", "params.yaml"])
    table = pd.read_csv(paths.split_file("synthetic"))
    twins = table[table["source_id"].isin(["img02", "twin"])]
    assert set(twins["group"]) == {"g02+g09"} and twins["fold"].nunique() == 1
    record = json.loads(paths.audit_file("synthetic").read_text())
    assert [(m["a"]["id"], m["b"]["id"], m["variant"]) for m in record["matches"]] == [("img02", "twin", "flip")]


def test_the_stage_refuses_with_exit_1_naming_both_files(tmp_path, monkeypatch, caplog) -> None:
    stage_inputs(tmp_path, "refuse", folds=0)
    monkeypatch.chdir(tmp_path)
    stage = split_stage()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_:
        stage.run_stage(stage.main, ["synthetic", "--params", "params.yaml"])
    assert exit_.value.code == 1
    assert "img02.png" in caplog.text and "twin.png" in caplog.text and "flip, distance" in caplog.text
    assert not paths.split_file("synthetic").exists() and not paths.audit_file("synthetic").exists()


def publish(root) -> None:
    """Give the stage inputs' images a published split: the twin (merged with img02's group) on a third side."""
    path = root / paths.converted_dir("synthetic") / converted.MANIFEST
    manifest = pd.read_csv(path)
    sides = {"img08": "valid", "img09": "valid", "img10": "test", "img11": "test", "twin": "test"}
    manifest["published_split"] = manifest["id"].map(lambda i: sides.get(i, "train"))
    manifest.to_csv(path, index=False)


def test_the_stage_moves_a_merged_group_the_published_split_divides(tmp_path, monkeypatch, caplog) -> None:
    stage_inputs(tmp_path, "merge", folds=0, predefined="respect")
    publish(tmp_path)
    monkeypatch.chdir(tmp_path)
    stage = split_stage()
    with caplog.at_level(logging.INFO):
        stage.run_stage(stage.main, ["synthetic", "--params", "params.yaml"])
    table = pd.read_csv(paths.split_file("synthetic"))
    originals = table[table["kind"] == "original"].set_index("id")["split"]
    # img02 (train), img09 (valid) and the twin (test) are one group: a three-way tie, so test.
    assert originals[["img02", "img09", "twin"]].tolist() == ["test"] * 3
    assert originals.value_counts().to_dict() == {"train": 7, "test": 5, "valid": 1}
    assert set(table.loc[table["source_id"] == "img02", "split"]) == {"test", "unused"}
    record = json.loads(paths.audit_file("synthetic").read_text())
    assert record["predefined_moves"] == [{"group": "g02+g09", "to": "test", "published": {
        "test": ["twin"], "valid": ["img09"], "train": ["img02"]}}]
    assert "group g02+g09 was published on test (1), valid (1), train (1); moved whole to test" in caplog.text


def test_the_stage_refuses_a_divided_group_with_exit_1(tmp_path, monkeypatch, caplog) -> None:
    stage_inputs(tmp_path, "merge", folds=0, predefined="respect", predefined_conflict="refuse")
    publish(tmp_path)
    monkeypatch.chdir(tmp_path)
    stage = split_stage()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_:
        stage.run_stage(stage.main, ["synthetic", "--params", "params.yaml"])
    assert exit_.value.code == 1
    assert "'g02+g09'" in caplog.text and "test: twin; valid: img09; train: img02" in caplog.text
    assert not paths.split_file("synthetic").exists()


# --------------------------------------------------------------------------- the shared real datasets
# DDTI ships one crop (and its mask) byte-identical under four patients; nothing else in these sets is a
# near-duplicate across patients. CLOSEST: the smallest distance (of 256 bits) between images of different
# patients once those copies are set aside, as measured: the margin above split.audit.max_distance. (The 64-bit
# hash measured 8, 14, 6 and 12 bits: CHASE's fundi came within 2 bits of a JPEG re-encoding's 4.)
DDTI_COPIES = ["150_1", "323_1", "326_1", "349_1"]
SHARED = {  # name: image folder, channels, the pairs the audit must find, CLOSEST
    "us-liver-mini": ("images", 1, set(), 78),
    "busi-malignant-mini": ("images", 1, set(), 92),
    "chase-retina-mini": ("images", 3, set(), 46),
    "ddti-thyroid": ("cropped", 1, {(a, b) for i, a in enumerate(DDTI_COPIES) for b in DDTI_COPIES[i + 1:]}, 84),
}


def shared_hashes(name: str) -> tuple[list[str], list[str], np.ndarray]:
    """Stems, patient groups (as convert derives them) and hashes of a shared dataset's images."""
    folder, channels, _, _ = SHARED[name]
    files = sorted((shared_dataset(name) / folder).iterdir())
    regex = load_params(REPO / "params.yaml").dataset(name).convert.group_regex
    stems = [f.stem for f in files]
    groups = [re.search(regex, s).group(1) if regex else s for s in stems]
    return stems, groups, np.stack([variant_hashes(read_image(f, channels, 10**8), SIZE) for f in files])


@pytest.mark.parametrize("name", list(SHARED))
def test_shared_datasets_hold_only_their_known_duplicates(name) -> None:
    _, _, expected, closest_distinct = SHARED[name]
    stems, groups, hashes = shared_hashes(name)
    matches, _ = cross_group_matches(stems, groups, hashes, DEFAULT.max_distance)
    assert {(m.a, m.b) for m in matches} == expected
    assert all(m.distance == 0 and m.variant == "same" for m in matches)
    if expected:
        assert set(merge_groups(matches).values()) == {"150+323+326+349"}
    keep = [k for k, s in enumerate(stems) if s not in DDTI_COPIES[1:]]
    _, closest = cross_group_matches([stems[k] for k in keep], [groups[k] for k in keep], hashes[keep], 0)
    assert closest == closest_distinct > DEFAULT.max_distance


def test_chase_eyes_of_one_child_are_not_near_duplicates() -> None:
    stems, _, hashes = shared_hashes("chase-retina-mini")
    dist, _ = distances(hashes)
    index = {s: k for k, s in enumerate(stems)}
    pairs = [(index[f"Image_{n:02d}L"], index[f"Image_{n:02d}R"]) for n in range(1, 15)]
    assert min(dist[i, j] for i, j in pairs) > DEFAULT.max_distance


def test_the_default_synthetic_scans_are_not_merged(tmp_path) -> None:
    """120 fan-shaped scans of one virtual probe: the 64-bit hash puts distinct ones 4 bits apart, as close as a
    JPEG re-encoding moves a copy; the default 256 bits keep them far apart."""
    generate(tmp_path, load_params(REPO / "params.yaml").dataset("synthetic").source)
    files = sorted(tmp_path.rglob("image/*.jpg"))
    ids = [f"{f.parent.parent.name}/{f.stem}" for f in files]
    images = [read_image(f, 1, 10**8) for f in files]
    matches, closest = cross_group_matches(ids, ids, np.stack([variant_hashes(im, SIZE) for im in images]),
                                           DEFAULT.max_distance)
    assert matches == [] and closest >= 44
    _, closest_64 = cross_group_matches(ids, ids, np.stack([variant_hashes(im, 8) for im in images]), 0)
    assert closest_64 <= 4
