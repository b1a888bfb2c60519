"""Find the samples of a raw dataset: image file, annotation files, group.

The files of an annotation tool (COCO, LabelMe, CVAT: ``INSTANCE_FORMATS``)
list their images themselves. Otherwise two layouts: the fixed AUL layout
(``medseg.formats.aul``) and a folder
layout configured in params (images folder, masks folder, a mask-name
pattern such as ``{stem}_mask``, or ``{stem}_mask*`` for several masks
``{stem}_mask``, ``{stem}_mask_1``, ... of one image), at the dataset root
or inside each of its class folders (``layout.class_folders``; ids then
start with the class), or inside each folder of a published split
(``layout.split_folders``; ids stay the stems, and each sample records its
``published_split``). Groups come from ``group_regex`` on the image stem
(else each image is its own group); ids must be unique. Where images and
masks share one folder, a file is a mask when its stem fits ``mask_name``
(or, with the plain ``{stem}``, by its extension). The result is a
list of ``Sample`` plus a list of problems; whether a problem stops the
stage is decided by the caller.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

from medseg.config import AulAnnotation, ConvertConfig, FolderLayout
from medseg.io.errors import DataError
from medseg.io.images import display_path

from .aul import discover_aul
from .coco import discover_coco
from .cvat import discover_cvat
from .image_class import assign_image_classes
from .labelme import discover_labelme
from .samples import Discovery, Sample, safe_id


def discover(root: Path, cfg: ConvertConfig) -> Discovery:
    if isinstance(cfg.annotation, AulAnnotation):
        found = discover_aul(root, cfg.annotation)
    elif cfg.is_instances:
        ignore = cfg.ignore.labels if cfg.ignore is not None else ()
        found = INSTANCE_FORMATS[cfg.annotation.format](root, cfg.annotation, cfg.classes, ignore)
    else:
        found = _discover_folders(root, cfg.layout)
    _assign_groups(found, cfg.group_regex)
    assign_image_classes(found, cfg.image_class, root)
    _check_unique_ids(found)
    return found


# The formats of drawn instances: each reads its annotation files into samples (medseg.formats.instances).
INSTANCE_FORMATS = {"coco": discover_coco, "labelme": discover_labelme, "cvat": discover_cvat}


# --------------------------------------------------------------------------- folders
def _by_stem(folder: Path, exts: list[str]) -> dict[str, list[Path]]:
    allowed = {e.lower() for e in exts}
    out: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in allowed and not path.name.startswith("."):
            out[path.stem].append(path)
    return out


def _discover_folders(root: Path, layout: FolderLayout) -> Discovery:
    if layout.split_folders:
        return _discover_split_folders(root, layout)
    if not layout.class_folders:
        return _discover_pairs(root, layout)
    missing = [name for name in layout.class_folders if not (root / name).is_dir()]
    if missing:
        raise DataError(display_path(root / missing[0]), "class folder not found (layout.class_folders lists "
                                                         f"{layout.class_folders})")
    found = Discovery([], [], [])
    for name in layout.class_folders:
        part = _discover_pairs(root / name, layout, name)
        found.samples += part.samples
        found.problems += part.problems
        found.notes += [f"{name}: {note}" for note in part.notes]
    others = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in layout.class_folders)
    if others:
        found.notes.append(f"folders not in layout.class_folders, not read: {others}")
    return found


def _discover_split_folders(root: Path, layout: FolderLayout) -> Discovery:
    """Pairs in each published split's folder; an image keeps its stem as id (a clash is caught later)."""
    missing = [f for f in layout.split_folders.values() if not (root / f).is_dir()]
    if missing:
        raise DataError(display_path(root / missing[0]), "split folder not found (layout.split_folders names "
                                                         f"{dict(layout.split_folders)})")
    found = Discovery([], [], [])
    for split, folder in layout.split_folders.items():
        part = _discover_pairs(root / folder, layout)
        found.samples += [replace(s, published_split=split) for s in part.samples]
        found.problems += part.problems
        found.notes += [f"{folder}: {note}" for note in part.notes]
    return found


def _sample_id(stem: str, folder: str) -> str:
    """The stem, prefixed with its class folder unless it already starts with it (BUSI's 'benign (1)')."""
    sid = safe_id(stem)
    prefix = safe_id(folder) if folder else ""
    return sid if not prefix or sid == prefix or sid.startswith(f"{prefix}_") else f"{prefix}_{sid}"


_NUMBERED = re.compile(r"(.+)_(\d+)")


def _mask_index(stems: list[str], several: bool) -> dict[str, list[str]]:
    """Mask stems by the name an image asks for: ``X``, and with ``several`` also ``X_1``, ``X_2``... as ``X``."""
    index: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for stem in stems:
        index[stem].append((-1, stem))
        numbered = _NUMBERED.fullmatch(stem) if several else None
        if numbered:
            index[numbered.group(1)].append((int(numbered.group(2)), stem))
    return {base: [stem for _, stem in sorted(found)] for base, found in index.items()}


def _mask_stem_pattern(mask_name: str) -> re.Pattern[str]:
    """The stems ``mask_name`` gives a mask of any image (with a final '*', also followed by ``_N``)."""
    base = ".+".join(re.escape(part) for part in mask_name.rstrip("*").split("{stem}"))
    return re.compile(base + (r"(?:_\d+)?" if mask_name.endswith("*") else ""))


def _side_by_side(folder: Path, layout: FolderLayout, images: dict[str, list[Path]],
                  masks: dict[str, list[Path]]) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Images and masks of one folder told apart: a mask by its name (``mask_name``), else by its extension.

    A mask is then neither an image of its own nor, when its image is missing,
    an image whose mask is missing; and an image is not a mask without an image.
    """
    if layout.mask_name.rstrip("*") != "{stem}":
        is_mask = _mask_stem_pattern(layout.mask_name).fullmatch
        return ({s: p for s, p in images.items() if not is_mask(s)},
                {s: p for s, p in masks.items() if is_mask(s)})
    common = sorted({e.lower() for e in layout.image_exts} & {e.lower() for e in layout.mask_exts})
    if common:
        raise DataError(display_path(folder), "images and masks share this folder and a mask has its image's name "
                                              f"(mask_name {layout.mask_name!r}), but image_exts and mask_exts "
                                              f"both hold {common}: set a mask_name such as '{{stem}}_mask', or "
                                              "extensions that tell masks from images")
    return images, masks


def _discover_pairs(root: Path, layout: FolderLayout, folder: str = "") -> Discovery:
    """Image/mask pairs under ``root`` (the dataset root, or one class folder of it)."""
    image_dir, mask_dir = root / layout.images, root / layout.masks
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise DataError(display_path(d), "folder not found (see the dataset's 'layout' in params.yaml)")
    images = _by_stem(image_dir, layout.image_exts)
    masks = _by_stem(mask_dir, layout.mask_exts)
    if image_dir.resolve() == mask_dir.resolve():
        images, masks = _side_by_side(image_dir, layout, images, masks)
    several = layout.mask_name.endswith("*")
    index = _mask_index(list(masks), several)

    def mask_stems(stem: str) -> list[str]:
        return index.get(layout.mask_name.rstrip("*").format(stem=stem), [])

    pairs, problems = [], []
    for stem, files in sorted(images.items()):
        if len(files) > 1:
            problems.append(DataError(display_path(files[0]), "two image files share one name: "
                                      + ", ".join(display_path(f.name) for f in files)))
            continue
        wanted = mask_stems(stem)
        if not wanted:
            name = layout.mask_name.rstrip("*").format(stem=stem)
            problems.append(DataError(display_path(files[0]), f"no mask named {name!r}"
                                      + (f" or '{name}_N'" if several else "") + f" in {display_path(mask_dir)}"))
            continue
        doubled = [m for m in wanted if len(masks[m]) > 1]
        if doubled:
            problems.append(DataError(display_path(files[0]), "two mask candidates: "
                                      + ", ".join(display_path(c.name) for c in masks[doubled[0]])))
            continue
        pairs.append((stem, files[0], wanted))
    samples, claims = [], Counter(m for _, _, wanted in pairs for m in wanted)
    for stem, image, wanted in pairs:
        shared = [m for m in wanted if claims[m] > 1]
        if shared:
            problems.append(DataError(display_path(image), f"mask {display_path(masks[shared[0]][0].name)} "
                                      "also matches another image's mask name; rename one of them"))
            continue
        samples.append(Sample(id=_sample_id(stem, folder), group="", image=image,
                              masks=tuple(masks[m][0] for m in wanted), folder=folder))
    unpaired = sorted(set(masks) - set(claims))
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
