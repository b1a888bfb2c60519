"""Find the samples of a raw dataset: image file, annotation files, group.

Two layouts: the fixed AUL layout (``medseg.formats.aul``) and a folder
layout configured in params (images folder, masks folder, a mask-name
pattern such as ``{stem}_mask``). Groups come from ``group_regex`` on the
image stem (else each image is its own group); ids must be unique. The
result is a list of ``Sample`` plus a list of problems; whether a problem
stops the stage is decided by the caller.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from medseg.config import AulAnnotation, ConvertConfig, FolderLayout
from medseg.io.errors import DataError
from medseg.io.images import display_path

from .aul import discover_aul
from .samples import Discovery, Sample, safe_id


def discover(root: Path, cfg: ConvertConfig) -> Discovery:
    if isinstance(cfg.annotation, AulAnnotation):
        found = discover_aul(root, cfg.annotation)
    else:
        found = _discover_folders(root, cfg.layout)
    _assign_groups(found, cfg.group_regex)
    _check_unique_ids(found)
    return found


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
