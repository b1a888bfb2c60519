"""Schema of ``datasets.<name>.convert``: how the convert stage reads a dataset.

The annotation format (``format`` picks one codec), the class names (label
value = position, ``background`` first), channels, the image/mask pairing of
a folder layout, the patient-group regex, how the image-level class is
derived, and what to do with bad files. ``DatasetConfig`` joins this with the
dataset's ``source``.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, Field, field_validator, model_validator

from .base import Strict
from .sources import Source
from .volumes import DicomAnnotation, NiftiAnnotation, VolumeAnnotation, VolumeSlicing

# Image files the pipeline reads by default (Pillow decodes them all).
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class AulAnnotation(Strict):
    """AUL polygons: ``<Class>/segmentation/{outline,liver,mass}/N.json``."""

    format: Literal["aul_polygons"]
    liver_class: str = "liver"
    mass_classes: dict[str, str] = {"Benign": "benign", "Malignant": "malignant"}
    image_classes: dict[str, str] = {"Benign": "benign", "Malignant": "malignant", "Normal": "normal"}
    # Quirks of one published dataset, by image number (AUL's are listed in params.yaml).
    outline_is_liver: list[str] = Field([], description="images whose 'outline' polygon is the liver")
    missing_liver: list[str] = Field([], description="images known to have no liver polygon")

    def pixel_classes(self) -> set[str]:
        return {self.liver_class, *self.mass_classes.values()}


class _Snapping(Strict):
    tolerance: int = Field(0, ge=0, le=255, description="max per-channel distance for snapping a lossy colour")
    max_outlier_fraction: float = Field(0.0, ge=0.0, lt=0.5, description="share of a mask's pixels that may lie "
                                        "beyond the tolerance and still snap to the nearest class (counted)")


class RgbAnnotation(_Snapping):
    """Colour masks; colours are given in RGB order (OpenCV's BGR is handled in code)."""

    format: Literal["rgb"]
    colors: dict[str, tuple[int, int, int]]

    def pixel_classes(self) -> set[str]:
        return set(self.colors)

    @field_validator("colors")
    @classmethod
    def _range(cls, v: dict[str, tuple[int, int, int]]) -> dict[str, tuple[int, int, int]]:
        for name, rgb in v.items():
            if any(not 0 <= c <= 255 for c in rgb):
                raise ValueError(f"colour of {name!r} must be 0..255 per channel, got {list(rgb)}")
        if len(set(v.values())) != len(v):
            raise ValueError("two classes share one colour")
        return v


class GreyAnnotation(_Snapping):
    format: Literal["grey"]
    values: dict[str, int]

    def pixel_classes(self) -> set[str]:
        return set(self.values)

    @field_validator("values")
    @classmethod
    def _range(cls, v: dict[str, int]) -> dict[str, int]:
        if any(not 0 <= g <= 255 for g in v.values()):
            raise ValueError("grey values must be 0..255")
        if len(set(v.values())) != len(v):
            raise ValueError("two classes share one grey value")
        return v


class BinaryAnnotation(Strict):
    """Masks with two levels, possibly blurred by JPEG: ``>= threshold`` is foreground."""

    format: Literal["binary"]
    foreground: str
    threshold: int = Field(128, ge=1, le=255)

    def pixel_classes(self) -> set[str]:
        return {self.foreground}


class OutlineAnnotation(Strict):
    """Closed contours drawn as pixels (a ring of any thickness on black), each filled with ``foreground``.

    Ink is ``>= threshold``. A contour drawn inside another is filled too,
    unless ``holes``: then contours alternate, region, hole, region (the
    rings themselves stay foreground). A contour with a gap is an error
    naming where its ends are, unless a morphological closing of
    ``close_gaps`` pixels (a disk of that radius) bridges it first.
    """

    format: Literal["outline"]
    foreground: str
    threshold: int = Field(128, ge=1, le=255)
    holes: bool = Field(False, description="a contour nested in another outlines a hole in it")
    close_gaps: int = Field(0, ge=0, le=50, description="radius in pixels of a closing applied before filling; "
                                                        "bridges gaps up to about twice as wide")

    def pixel_classes(self) -> set[str]:
        return {self.foreground}


class PaletteAnnotation(Strict):
    """Indexed PNG masks: palette index -> class."""

    format: Literal["palette"]
    indices: dict[str, int]

    def pixel_classes(self) -> set[str]:
        return set(self.indices)


def _under_root(v: str) -> str:
    path = PurePosixPath(v)
    if not v or path.is_absolute() or ".." in path.parts or "\\" in v:
        raise ValueError(f"{v!r} must be a path under the dataset root, without '..'")
    return v


# A path field of an annotation format: relative, under the dataset root.
UnderRoot = Annotated[str, AfterValidator(_under_root)]


class _Instances(Strict):
    """What the formats of drawn instances (``coco``, ``labelme``, ``cvat``) share.

    ``labels`` maps a category / label name of the file to a class; a name
    it does not list maps to the class of the same name, and a name that is
    neither is an error. Several instances of an image merge into one label
    map; where they overlap, the class ``later`` (or ``earlier``) in
    ``classes`` wins. An image without any annotation is an error, or all
    background with ``unannotated: background``.
    """

    labels: dict[str, str] = Field({}, description="name in the annotation file -> class (default: the same name)")
    overlap: Literal["later", "earlier"] = Field("later", description="where instances overlap, the class later "
                                                                      "(or earlier) in classes wins")
    unannotated: Literal["error", "background"] = "error"

    def pixel_classes(self) -> set[str]:
        return set(self.labels.values())


class CocoAnnotation(_Instances):
    """One COCO instances JSON for the dataset: polygons and RLE (compressed or not); ``file_name`` is under ``images``.

    ``crowd``: ``include`` takes ``iscrowd`` regions as their category's pixels, ``skip`` leaves them out.
    """

    format: Literal["coco"]
    file: UnderRoot = Field(description="the JSON, a path under the dataset root")
    images: UnderRoot = "images"
    crowd: Literal["include", "skip"] = "include"


class LabelmeAnnotation(_Instances):
    """One LabelMe JSON per image in ``folder``: polygon, rectangle and circle shapes.

    ``imagePath`` is relative to the JSON; its embedded ``imageData`` is read
    when the image file is missing. Line and point shapes fill nothing: an
    error, or left out with ``unfillable: ignore``. With ``images`` set, an
    image file there that no JSON names is unannotated.
    """

    format: Literal["labelme"]
    folder: UnderRoot = "."
    images: UnderRoot | None = Field(None, description="folder of the images, to find those without a JSON")
    unfillable: Literal["error", "ignore"] = "error"


class CvatAnnotation(_Instances):
    """CVAT for images 1.1 XML: polygons, boxes (rotated too), ellipses and masks (CVAT's RLE over a box).

    Each ``<image name>`` is under ``images``; its ``width``/``height`` must
    be the file's. Polylines and points fill nothing: an error, or left out
    with ``unfillable: ignore``.
    """

    format: Literal["cvat"]
    file: UnderRoot = "annotations.xml"
    images: UnderRoot = "images"
    unfillable: Literal["error", "ignore"] = "error"


InstanceAnnotation = CocoAnnotation | LabelmeAnnotation | CvatAnnotation


Annotation = Annotated[
    AulAnnotation | RgbAnnotation | GreyAnnotation | BinaryAnnotation | OutlineAnnotation | PaletteAnnotation
    | CocoAnnotation | LabelmeAnnotation | CvatAnnotation | NiftiAnnotation
    | DicomAnnotation,
    Field(discriminator="format"),
]


class FolderLayout(Strict):
    """Where images and masks are, and how a mask is paired to its image.

    With ``class_folders`` the dataset root holds one folder per image-level
    class and ``images``/``masks`` are taken inside each (``.`` for images
    and masks side by side, as BUSI is published). With ``split_folders``
    the dataset is published already split: each named folder (a path under
    the root) holds ``images``/``masks``, and every image records the split
    it was published in (``split.predefined`` decides whether it counts).
    """

    images: str = "images"
    masks: str = "masks"
    mask_name: str = Field("{stem}", description="mask file stem, e.g. '{stem}_mask'; a final '*' also takes "
                                                 "'{stem}_mask_1', '{stem}_mask_2'... and merges them")
    image_exts: list[str] = list(IMAGE_EXTS)
    mask_exts: list[str] = [*IMAGE_EXTS, ".gif"]
    class_folders: list[str] = Field([], description="folders of the dataset root, one per image-level class")
    split_folders: dict[Literal["train", "valid", "test"], str] = Field(
        {}, description="published split -> its folder under the dataset root, e.g. {train: train/train, "
                        "valid: valid/valid, test: test/test}")

    @field_validator("mask_name")
    @classmethod
    def _has_stem(cls, v: str) -> str:
        if "{stem}" not in v:
            raise ValueError("must contain '{stem}'")
        if "*" in v.rstrip("*") or v.endswith("**"):
            raise ValueError(f"{v!r}: '*' may only end the name (as in '{{stem}}_mask*')")
        return v

    @field_validator("class_folders")
    @classmethod
    def _plain_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not name or name in {".", ".."} or "/" in name or "\\" in name:
                raise ValueError(f"{name!r} is not a folder name (one folder directly under the dataset root)")
        if len(set(v)) != len(v):
            raise ValueError("folder names must be unique")
        return v

    @field_validator("split_folders")
    @classmethod
    def _inside_root(cls, v: dict[str, str]) -> dict[str, str]:
        for split, folder in v.items():
            parts = PurePosixPath(folder).parts
            if not parts or PurePosixPath(folder).is_absolute() or ".." in parts or "\\" in folder:
                raise ValueError(f"{split}: {folder!r} must be a folder path under the dataset root, without '..'")
        if len(set(v.values())) != len(v):
            raise ValueError("two splits name one folder")
        return v

    @model_validator(mode="after")
    def _one_kind_of_folders(self) -> FolderLayout:
        if self.class_folders and self.split_folders:
            raise ValueError("class_folders and split_folders exclude each other (take the image class from a "
                             "regex or csv instead)")
        return self


def _check_regex(v: str | None, what: str) -> str | None:
    if v is None:
        return v
    try:
        compiled = re.compile(v)
    except re.error as exc:
        raise ValueError(f"invalid regex {v!r}: {exc}") from exc
    if compiled.groups < 1:
        raise ValueError(f"regex {v!r} needs a capture group for {what}")
    return v


class ImageClassRule(Strict):
    """How the image-level class (used to stratify splits) is derived.

    ``annotation``: from the annotation itself (AUL folder); ``mask``: the
    foreground class with most pixels, ``empty`` when there is none;
    ``fixed``: ``value`` for every image; ``folder``: the name of the image's
    class folder (``layout.class_folders``); ``regex``: group 1 of
    ``pattern`` on the image stem; ``csv``: the ``class_column`` of the row
    of a metadata table whose ``id_column`` is the image's id (the stem, or
    group 1 of ``id_pattern`` on it), a blank cell giving ``unknown``.
    """

    source: Literal["annotation", "mask", "fixed", "folder", "regex", "csv"] = "mask"
    empty: str = "normal"
    value: str | None = None
    pattern: str | None = Field(None, description="regex on the image stem; group 1 is the class")
    path: str | None = Field(None, description="CSV file, relative to the dataset's raw folder")
    id_column: str | None = None
    class_column: str | None = None
    id_pattern: str | None = Field(None, description="regex on the image stem; group 1 is its id in the CSV")
    unknown: str | None = Field(None, min_length=1, description="class of a blank CSV cell; unset: a blank is "
                                                                "an error")

    @field_validator("pattern")
    @classmethod
    def _class_regex(cls, v: str | None) -> str | None:
        return _check_regex(v, "the class")

    @field_validator("id_pattern")
    @classmethod
    def _id_regex(cls, v: str | None) -> str | None:
        return _check_regex(v, "the id")

    @field_validator("path")
    @classmethod
    def _inside_raw(cls, v: str | None) -> str | None:
        if v is not None and (PurePosixPath(v).is_absolute() or ".." in PurePosixPath(v).parts):
            raise ValueError(f"{v!r} must be relative to the dataset's raw folder, without '..' (fetch copies the "
                             "file there, so DVC tracks it)")
        return v

    @model_validator(mode="after")
    def _fields_of_the_source(self) -> ImageClassRule:
        needed = _RULE_FIELDS.get(self.source, ())
        missing = [f for f in needed if not getattr(self, f)]
        if missing:
            raise ValueError(f"source {self.source!r} needs {', '.join(repr(f) for f in missing)}")
        allowed = {"source", "empty", *needed, *_OPTIONAL.get(self.source, ())}
        foreign = sorted(self.model_fields_set - allowed)
        if foreign:
            raise ValueError(f"{', '.join(repr(f) for f in foreign)}: not used by source {self.source!r}")
        return self


# The fields each image-class source needs, and those it may take.
_RULE_FIELDS = {"fixed": ("value",), "regex": ("pattern",), "csv": ("path", "id_column", "class_column")}
_OPTIONAL = {"csv": {"id_pattern", "unknown"}}


BitDepthRule = Literal["refuse", "minmax", "shift"]
BIT_DEPTH_RULES: tuple[str, ...] = get_args(BitDepthRule)  # medseg.io.images implements each but 'refuse'


class BitDepth(Strict):
    """How an image of more than 8 bits per pixel (16-bit PNG or TIFF) becomes 8-bit.

    ``refuse``: it stops the stage, naming the file; ``minmax``: each image's
    own range onto 0..255 (contrast differs between images); ``shift``: the
    top 8 of 16 bits, one scale for all (dark where fewer bits are used).
    Masks are never scaled: they must be 8-bit.
    """

    rule: BitDepthRule = "refuse"


class IgnoreLabel(Strict):
    """Pixels that are no class: left out of the loss and of every metric (a VOC-style 255 border, "unsure").

    One key, the one the annotation format names its classes with:
    ``value`` for ``grey`` (a grey level, snapped like the class values),
    ``palette`` (an index) and ``binary`` (a mask value matched exactly,
    before the threshold); ``color`` (RGB) for ``rgb``; ``labels`` (category
    / label names of the file) for ``coco``, ``labelme`` and ``cvat``, whose
    regions are ignored wherever they lie (over any class). Convert stores
    these pixels as ``medseg.data.converted.IGNORE`` (255) in the label map.
    """

    value: int | None = Field(None, ge=0, le=255, description="grey, palette, binary: the mask value")
    color: tuple[int, int, int] | None = Field(None, description="rgb: the colour, RGB order")
    labels: list[str] = Field([], description="coco, labelme, cvat: names in the annotation file")

    @field_validator("color")
    @classmethod
    def _rgb(cls, v: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if v is not None and any(not 0 <= c <= 255 for c in v):
            raise ValueError(f"must be 0..255 per channel, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _one_key(self) -> IgnoreLabel:
        if len(self.model_fields_set) != 1:
            raise ValueError("give exactly one of value (grey, palette, binary), color (rgb) or labels (coco, "
                             f"labelme, cvat); got {sorted(self.model_fields_set) or 'none'}")
        if "labels" in self.model_fields_set and not self.labels:
            raise ValueError("labels: name at least one category / label of the annotation file")
        return self

    @property
    def key(self) -> str:
        return next(iter(self.model_fields_set))


# The key of ``ignore`` each annotation format takes (formats not listed have no ignore label).
IGNORE_KEYS = {"grey": "value", "palette": "value", "binary": "value", "rgb": "color", "coco": "labels",
               "labelme": "labels", "cvat": "labels"}


def _ignore_collision(ann: Any, ignore: IgnoreLabel) -> str | None:
    """Why ``ignore`` cannot be told apart from a class of ``ann``, or ``None``."""
    if isinstance(ann, GreyAnnotation | PaletteAnnotation):
        table = ann.values if isinstance(ann, GreyAnnotation) else ann.indices
        same = [name for name, v in table.items() if v == ignore.value]
        kind = "grey value" if isinstance(ann, GreyAnnotation) else "palette index"
        return f"value {ignore.value} is the {kind} of class {same[0]!r}" if same else None
    if isinstance(ann, BinaryAnnotation):
        return "value 0 is the background of a binary mask" if ignore.value == 0 else None
    if isinstance(ann, RgbAnnotation):
        same = [name for name, rgb in ann.colors.items() if tuple(rgb) == tuple(ignore.color)]
        return f"color {list(ignore.color)} is the colour of class {same[0]!r}" if same else None
    mapped = [name for name in ignore.labels if name in ann.labels]
    if mapped:
        return f"labels: {mapped[0]!r} is mapped to class {ann.labels[mapped[0]]!r} in annotation.labels"
    return None


class ConvertConfig(Strict):
    """How the convert stage reads one dataset: annotation format, classes, pairing, groups."""

    annotation: Annotation
    classes: list[str] = Field(min_length=2, description="label value = index; index 0 is background")
    channels: Literal[1, 3] = 1
    layout: FolderLayout | None = None
    group_regex: str | None = Field(None, description="regex on the image stem; group 1 is the patient id")
    image_class: ImageClassRule = ImageClassRule()
    on_error: Literal["error", "skip"] = "error"
    max_pixels: int = Field(40_000_000, gt=0)
    bit_depth: BitDepth = BitDepth()
    volume: VolumeSlicing = Field(VolumeSlicing(), description="volume formats: how slices become images")
    ignore: IgnoreLabel | None = Field(None, description="pixels of no class, left out of the loss and the metrics")

    @property
    def is_instances(self) -> bool:
        """Whether the annotation is a file of drawn instances (``medseg.formats.instances`` fills them)."""
        return isinstance(self.annotation, CocoAnnotation | LabelmeAnnotation | CvatAnnotation)

    @property
    def is_volume(self) -> bool:
        """Whether the annotation is a volume format (``medseg.volumes`` converts it)."""
        return isinstance(self.annotation, VolumeAnnotation)

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        if v[0] != "background":
            raise ValueError(f"classes[0] must be 'background', got {v[0]!r}")
        if len(set(v)) != len(v):
            raise ValueError("class names must be unique")
        if len(v) > 255:
            raise ValueError("at most 255 classes fit a uint8 label map")
        return v

    @field_validator("group_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        return _check_regex(v, "the patient id")

    @model_validator(mode="after")
    def _consistent(self) -> ConvertConfig:
        unknown = sorted(self.annotation.pixel_classes() - set(self.classes))
        if unknown:
            raise ValueError(f"annotation: unknown class {unknown[0]!r}; classes are {self.classes}")
        if self.ignore is not None:
            self._consistent_ignore()
        if self.is_volume:
            return self._consistent_volume()
        if "volume" in self.model_fields_set:
            raise ValueError(f"volume: only used with the volume formats, not {self.annotation.format!r}")
        if isinstance(self.annotation, AulAnnotation | CocoAnnotation | LabelmeAnnotation | CvatAnnotation):
            if self.layout is not None:
                raise ValueError(f"layout: not used with format {self.annotation.format!r} (the annotation says "
                                 "where the images are)")
        elif self.layout is None:
            raise ValueError(f"layout: required for annotation format {self.annotation.format!r}")
        if self.image_class.source == "annotation" and not isinstance(self.annotation, AulAnnotation):
            raise ValueError("image_class.source: 'annotation' only works with format 'aul_polygons'")
        if self.image_class.source == "folder" and not (self.layout and self.layout.class_folders):
            raise ValueError("image_class.source: 'folder' needs layout.class_folders")
        return self

    def _consistent_ignore(self) -> None:
        fmt, key = self.annotation.format, IGNORE_KEYS.get(self.annotation.format)
        if key is None:
            raise ValueError(f"ignore: not supported with format {fmt!r}; formats with an ignore label: "
                             f"{', '.join(sorted(IGNORE_KEYS))}")
        if self.ignore.key != key:
            raise ValueError(f"ignore: format {fmt!r} takes ignore.{key}, not ignore.{self.ignore.key}")
        collision = _ignore_collision(self.annotation, self.ignore)
        if collision is not None:
            raise ValueError(f"ignore.{collision}; the ignore label must differ from every class")
        if key == "labels":
            named = [name for name in self.ignore.labels if name in self.classes]
            if named:
                raise ValueError(f"ignore.labels: {named[0]!r} is a class name; an ignored label cannot be a class")

    def _consistent_volume(self) -> ConvertConfig:
        fmt = self.annotation.format
        if self.layout is not None:
            raise ValueError(f"layout: not used with format {fmt!r} (the annotation holds the volume layout)")
        if self.group_regex is not None:
            raise ValueError(f"group_regex: not used with format {fmt!r} (the slices of a volume are one group)")
        if self.image_class.source not in ("mask", "fixed"):
            raise ValueError(f"image_class.source: {self.image_class.source!r} does not work with format {fmt!r}; "
                             "use 'mask' or 'fixed'")
        if self.channels != self.volume.slices_per_image:
            raise ValueError(f"channels: {self.channels}, but volume.slices_per_image is "
                             f"{self.volume.slices_per_image}; each slice of a 2.5D image is one channel")
        return self


class DatasetConfig(Strict):
    """A dataset profile: where the raw data comes from (fetch), how to read it (convert), and what differs.

    ``augment``, ``split``, ``train`` and ``evaluate`` are optional overrides:
    partial sections merged over the global ones for this dataset only (a
    value here beats both the global value and the plan). ``plan`` likewise
    changes how this dataset is planned (``budget_minutes`` for a dataset that
    needs less or more training time than the others). ``medseg.config.params``
    validates the merged sections.
    """

    source: Source
    convert: ConvertConfig
    plan: dict[str, Any] = {}
    augment: dict[str, Any] = {}
    split: dict[str, Any] = {}
    train: dict[str, Any] = {}
    evaluate: dict[str, Any] = {}

