"""Find the samples of a raw dataset: image file, annotation files, group.

Two layouts: the fixed AUL layout (``<Class>/image/N.jpg`` with
``<Class>/segmentation/{outline,liver,mass}/N.json``) and a folder layout
configured in params (images folder, masks folder, a mask-name pattern such
as ``{stem}_mask``). The result is a list of ``Sample`` plus a list of
problems; whether a problem stops the stage is decided by the caller.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import AulAnnotation, ConvertConfig, FolderLayout
from .errors import DataError
from .imageio import display_path

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Sample:
    id: str  # file-system safe, unique within the dataset
    group: str  # patient / source id; a group never crosses splits
    image: Path
    mask: Path | None = None  # folder layout
    polygons: dict[str, Path] = field(default_factory=dict)  # AUL: outline/liver/mass -> JSON
    folder: str = ""  # AUL class folder


@dataclass
class Discovery:
    samples: list[Sample]
    problems: list[DataError]
    notes: list[str]  # harmless findings worth a line in the report (unpaired masks, ...)


def safe_id(stem: str) -> str:
    """Make a file name stem usable as an output name (spaces, brackets, odd bytes)."""
    text = stem.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _SAFE.sub("_", text).strip("_") or "image"


def discover(root: Path, cfg: ConvertConfig) -> Discovery:
    if isinstance(cfg.annotation, AulAnnotation):
        found = _discover_aul(root, cfg.annotation)
    else:
        found = _discover_folders(root, cfg.layout)
    _assign_groups(found, cfg.group_regex)
    _check_unique_ids(found)
    return found


# --------------------------------------------------------------------------- AUL
def _class_folder(root: Path, name: str) -> Path | None:
    """AUL zips may extract as ``<Class>/image`` or one level deeper."""
    candidates = [root / name, *sorted(root.glob(f"*/{name}"))]
    found = [c for c in candidates if (c / "image").is_dir()]
    return found[0] if found else None


def _discover_aul(root: Path, ann: AulAnnotation) -> Discovery:
    samples, problems, notes = [], [], []
    folders = {name: _class_folder(root, name) for name in ann.image_classes}
    if not any(folders.values()):
        raise DataError(display_path(root), f"no AUL class folder found (expected one of {sorted(ann.image_classes)})")
    for name, folder in folders.items():
        if folder is None:
            notes.append(f"class folder {name!r} not present")
            continue
        for image in sorted((folder / "image").glob("*")):
            if image.suffix.lower() not in {".jpg", ".jpeg", ".png"}:
                continue
            seg = folder / "segmentation"
            polygons = {kind: seg / kind / f"{image.stem}.json" for kind in ("outline", "liver", "mass")}
            polygons = {k: p for k, p in polygons.items() if p.is_file()}
            samples.append(Sample(id=safe_id(f"{name}_{image.stem}"), group="", image=image,
                                  polygons=polygons, folder=name))
    return Discovery(samples, problems, notes)


# --------------------------------------------------------------------------- folders
def _by_stem(folder: Path, exts: list[str]) -> dict[str, list[Path]]:
    allowed = {e.lower() for e in exts}
    out: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in allowed and not path.name.startswith("."):
            out[path.stem].append(path)
    return out


def _discover_folders(root: Path, layout: FolderLayout) -> Discovery:
    image_dir, mask_dir = root / layout.images, root / layout.masks
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise DataError(display_path(d), "folder not found (see the dataset's 'layout' in params.yaml)")
    images = _by_stem(image_dir, layout.image_exts)
    masks = _by_stem(mask_dir, layout.mask_exts)
    if image_dir == mask_dir:
        # Images and masks side by side: a mask is not an image of its own.
        mask_stems = {layout.mask_name.format(stem=s) for s in images}
        images = {s: p for s, p in images.items() if s not in mask_stems}
    samples, problems, used = [], [], set()
    for stem, files in sorted(images.items()):
        if len(files) > 1:
            problems.append(DataError(display_path(files[0]), "two image files share one name: "
                                      + ", ".join(display_path(f.name) for f in files)))
            continue
        mask_stem = layout.mask_name.format(stem=stem)
        candidates = masks.get(mask_stem, [])
        used.add(mask_stem)
        if not candidates:
            problems.append(DataError(display_path(files[0]),
                                      f"no mask named {mask_stem!r} in {display_path(mask_dir)}"))
            continue
        if len(candidates) > 1:
            problems.append(DataError(display_path(files[0]), "two mask candidates: "
                                      + ", ".join(display_path(c.name) for c in candidates)))
            continue
        samples.append(Sample(id=safe_id(stem), group="", image=files[0], mask=candidates[0]))
    unpaired = sorted(set(masks) - used)
    notes = [f"{len(unpaired)} mask file(s) without an image, e.g. {unpaired[:3]}"] if unpaired else []
    return Discovery(samples, problems, notes)


# --------------------------------------------------------------------------- groups, ids
def _assign_groups(found: Discovery, regex: str | None) -> None:
    pattern = re.compile(regex) if regex else None
    kept = []
    for s in found.samples:
        if pattern is None:
            kept.append(replace(s, group=s.id))
            continue
        m = pattern.search(s.image.stem)
        if m is None:
            found.problems.append(DataError(display_path(s.image), f"name does not match group_regex {regex!r}"))
            continue
        kept.append(replace(s, group=safe_id(m.group(1))))
    found.samples = kept


def _check_unique_ids(found: Discovery) -> None:
    seen: dict[str, Path] = {}
    for s in found.samples:
        if s.id in seen:
            raise DataError(display_path(s.image), f"output name {s.id!r} clashes with {display_path(seen[s.id])}; "
                                                   "rename one of the files")
        seen[s.id] = s.image
